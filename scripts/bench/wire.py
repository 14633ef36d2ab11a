"""What the proxy adds to each request, measured on the wire, for the latency workload.

oha's figures are what a client feels, and they include oha's own delays: it runs on the
generator CPU beside the second oha, and when it stalls it sends a burst late and reads answers
late, which its latency correction charges to whichever proxy it was driving. The backend's
stalls count too, and the direct side's percentile subtracted from the proxied side's is a
difference of two noisy tails (it can be negative). At p99.9 (18 requests of a 10 s window)
those stalls decide the figure.

Here each request is timed twice on loopback (tcpdump): on the client's connection, from the
request's first packet to its response's first packet, and on the proxy's upstream connection
for the same request (oha --rand-regex-url gives every request a path of its own). The
difference is the time the request spent in the proxy, its socket queues included: the
generator's and the backend's delays cancel, per request.

What it cannot see: a request oha could not send because all 16 of its connections were
waiting; oha's figures, reported beside these, do.
"""

import os
import re
import shutil
import signal
import struct
import subprocess
import time

# Bytes kept per packet: IP and TCP headers (with options) and the payload's first bytes.
SNAPLEN = 128
# Kernel buffer for the capture (KiB): 10 s at 2000 req/s on both legs is ~150k packets.
BUFFER_KIB = 65536


def available():
    return shutil.which("tcpdump") is not None


class Capture:
    """tcpdump on lo for the proxy's and the backend's ports, started before the generators."""

    def __init__(self, path, ports, cpus):
        self.path = path
        cmd = ["tcpdump", "-i", "lo", "-n", "-s", str(SNAPLEN), "-B", str(BUFFER_KIB), "-w",
               path, " or ".join(f"tcp port {p}" for p in ports)]
        if cpus:
            cmd = ["taskset", "-c", cpus] + cmd
        self.err = open(path + ".err", "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)
        # tcpdump says "listening on lo" once the capture is open.
        deadline = time.time() + 5
        while time.time() < deadline and "listening" not in self._stderr():
            time.sleep(0.05)

    def _stderr(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        """Stops the capture; the kernel's drop count (None if tcpdump did not say)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        found = re.search(r"(\d+) packets? dropped by kernel", self._stderr())
        self.err.close()
        os.remove(self.path + ".err")
        return int(found.group(1)) if found else None


def packets(path):
    """(time, source port, destination port, payload length, payload start) of each TCP
    packet in a pcap file of loopback traffic."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return
        magic, = struct.unpack("<I", head[:4])
        scale = 1e9 if magic == 0xa1b23c4d else 1e6
        link, = struct.unpack("<I", head[20:24])
        offset = {1: 14, 113: 16, 276: 20}.get(link, 4)  # Ethernet, Linux cooked v1/v2, null
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            sec, frac, included, _ = struct.unpack("<IIII", record)
            data = f.read(included)
            ip = data[offset:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            total, = struct.unpack(">H", ip[2:4])
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            doff = (tcp[12] >> 4) * 4
            yield sec + frac / scale, sport, dport, total - ihl - doff, tcp[doff:doff + 48]


def added_latencies(path, proxy_port, backend_port, warmup):
    """What the proxy added to each request (µs, sorted), left out the first `warmup` seconds
    after the capture's first request: the time from the request's first packet to its
    response's first packet on the client's connection, less the same on the proxy's upstream
    connection for the same request. Requests are told apart by their path (oha
    --rand-regex-url: a random one each); a connection carries one request at a time (oha does
    not pipeline, keep-alive)."""
    sent, client, upstream = {}, {}, {}
    for t, sport, dport, length, start in packets(path):
        if length <= 0:
            continue
        if dport in (proxy_port, backend_port):
            line = start.split(b" ", 2)
            if len(line) == 3 and line[1].startswith(b"/"):
                sent[(sport, dport)] = (t, line[1])
        elif sport in (proxy_port, backend_port) and start.startswith(b"HTTP/1."):
            began = sent.pop((dport, sport), None)
            if began is not None:
                (client if sport == proxy_port else upstream)[began[1]] = (began[0], t)
    first = min((t for t, _ in client.values()), default=0)
    return sorted(((t4 - t1) - (upstream[p][1] - upstream[p][0])) * 1e6
                  for p, (t1, t4) in client.items()
                  if p in upstream and t1 - first >= warmup)
