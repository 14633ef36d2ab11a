#!/usr/bin/env python3
"""How often two keep-alive clients that connect at the same moment land on one stitch worker.

    scripts/bench/worker_spread.py target/release/stitch [--rounds 200] [-- extra stitch flags]

Starts the binary with `--workers 2` twice — hand-off on, then off (`STITCH_WORKER_HANDOFF`) —
and per round connects two clients together, sends one request on each (answered 502: no
upstream is needed), reads `stitch_worker_connections_total{worker}` from the admin server,
closes both and waits until stitch has closed them too. Prints the share of rounds where one
worker got both connections.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def per_worker(text):
    found = re.findall(r'^stitch_worker_connections_total\{worker="(\d+)"\} (\d+)', text, re.M)
    return {int(w): int(v) for w, v in found}


def open_inbound(text):
    m = re.search(r'^stitch_open_connections\{direction="inbound"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def request_on(sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed before a response")
        data += chunk


def run(binary, handoff, rounds, extra):
    inbound, admin = free_port(), free_port()
    env = dict(os.environ, RUST_LOG="warn", STITCH_WORKER_HANDOFF=handoff)
    proc = subprocess.Popen(
        [binary, "run", "--workers", "2", "--inbound-listen", f"127.0.0.1:{inbound}",
         "--outbound-listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{admin}",
         "--inbound-target", f"127.0.0.1:{free_port()}", *extra],
        env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                scrape(admin)
                break
            except OSError:
                time.sleep(0.05)
        same = 0
        for _ in range(rounds):
            before = per_worker(scrape(admin))
            a, b = socket.socket(), socket.socket()
            a.setblocking(False)
            b.setblocking(False)
            a.connect_ex(("127.0.0.1", inbound))
            b.connect_ex(("127.0.0.1", inbound))
            a.setblocking(True)
            b.setblocking(True)
            request_on(a)
            request_on(b)
            after = per_worker(scrape(admin))
            gained = [w for w in after if after[w] - before.get(w, 0) > 0]
            same += len(gained) == 1
            a.close()
            b.close()
            while open_inbound(scrape(admin)) != 0:
                time.sleep(0.005)
        return same
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("extra", nargs="*", help="more stitch flags (after --)")
    args = parser.parse_args()
    for handoff in ("true", "false"):
        same = run(args.binary, handoff, args.rounds, args.extra)
        print(f"hand-off {handoff:5}: both clients on one worker in {same}/{args.rounds} rounds "
              f"({100 * same / args.rounds:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
