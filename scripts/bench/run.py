#!/usr/bin/env python3
"""The measurement half of `make bench` (bench.sh installs the tools and builds first).

Starts one backend and every proxy in front of it, then, in rounds, runs each workload against
each target, rotating the order every round so slow drifts of this noisy VM spread evenly.
Everything is on loopback, every measurement has a time bound, and every process this script
starts is killed when it exits (normally, on error, or on Ctrl-C).

Shapes (each measured in every round, so slow drifts of the VM spread over all of them):
  limit1     every proxy under a CFS quota of one CPU in a cgroup of its own (what a pod with
             `limits.cpu: 1` gets); load generators and backend free; one worker per proxy
  unlimited  nothing pinned, no quota: every proxy sizes itself to the machine (nginx
             `worker_processes auto`, haproxy `nbthread` = CPUs, stitch its default)
  pinned     load generators on CPU 0, backend and proxies on CPU 1 (a layout pods never get,
             kept for A/B work: the least noisy one)
  conns      as limit1, for the many-connections workloads only (5,000 idle, then 5,000 busy
             keep-alive clients) on freshly started proxies

Targets: direct (no proxy), nginx, haproxy, stitch with tracing off, stitch tracing to its
in-memory ring, stitch exporting OTLP/HTTP to a receiver that accepts without decoding
(examples/bench_otlp_sink.rs); in the pinned shape also stitch exporting to a collector that is
down (closed port) and to one that accepts connections and never answers (black hole), for
the latency workload only.

Workloads (per target per round):
  h1       wrk, 50 connections, closed loop                 -> req/s, proxy CPU s / 10k req
  latency  oha at a fixed rate, PAIRED with a second oha     -> added p50/p99/p99.9, peak RSS
           driving the backend directly in the same window; --latency-seconds long (10), the
           first --latency-warmup second (oha opening its connections) left out of the
           percentiles
  h2       h2load, h2c prior knowledge, many streams         -> req/s, proxy CPU s / 10k req
  grpc     bench_grpc_load unary and bidi streaming          -> req/s (msg/s), CPU s / 10k
  body     1 GiB download and 1 GiB upload with curl         -> MB/s, peak RSS, CPU s / GiB
  slowloris  (limit1; nginx, haproxy, stitch ring) oha at the fixed rate alone, then again
           while 500 clients trickle a request head at 1 byte/s (trickle_clients.py; closed
           ones reconnect)                                   -> p99 against its own baseline

Proxy CPU is utime+stime from /proc/PID/stat (all processes of the proxy); peak RSS is the sum
of VmHWM after resetting it (`echo 5 > /proc/PID/clear_refs`) at the start of each workload.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # keep scripts/bench free of __pycache__
import procs  # noqa: E402
import wire  # noqa: E402
from procs import Probe, run_generator, spawn_generator, start, wait_generators  # noqa: E402
from report import describe_evidence, git_commit, write_conns_section, write_report  # noqa: E402,F401

HERE = os.path.dirname(os.path.abspath(__file__))
# Loopback requests must never go through a proxy named in the caller's environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GIB = 1 << 30

# ----------------------------------------------------------------------------------------------
# Targets


class Target:
    def __init__(self, name, h1, h2, grpc, proc=None, admin_url=None, only=None):
        self.name, self.h1, self.h2, self.grpc, self.proc = name, h1, h2, grpc, proc
        self.admin_url = admin_url  # stitch's admin server, for its span counters
        self.problem = None  # set when the target cannot serve; it is then skipped
        self.only = only  # the workloads this target runs (None: all)
        self.rss_start_mib = 0.0  # RSS once it answered its first request


class Shape:
    """A way to place the processes on the machine's CPUs (see the module doc)."""

    def __init__(self, key, title, what, gen, backend, proxy, workers, workloads, realtime,
                 collector_faults=False):
        self.key, self.title, self.what = key, title, what
        self.gen, self.backend, self.proxy = gen, backend, proxy  # procs.Placement or None
        self.workers = workers  # nginx worker_processes / haproxy nbthread
        self.workloads = workloads  # workload names measured in this shape
        self.realtime = realtime  # SCHED_FIFO for the latency workload
        self.collector_faults = collector_faults  # add the collector-down / black-hole targets


def shapes(args):
    """The shapes asked for, in the order given."""
    ncpu = os.cpu_count() or 1
    quota = procs.quota_support()
    limit1 = (procs.Placement(quota=1), "every proxy in a cgroup of its own with a CFS quota of "
              "one CPU (a pod's `limits.cpu: 1`)") if quota else \
        (procs.Placement(cpus="1"), "every proxy pinned to CPU 1 with taskset (this machine "
         "offers no writable cgroup cpu controller for a quota)")
    common = ["h1", "latency", "h2", "grpc_unary", "body"]
    known = {
        "limit1": Shape("limit1", "(a) CPU limit 1", limit1[1] + "; load generators and "
                        "backend free; nginx 1 worker, haproxy 1 thread, stitch sizes itself "
                        "from the quota", None, None, limit1[0], 1, common + ["slowloris"],
                        False),
        # Many connections on freshly started proxies (memory per connection is measured from
        # the RSS at start, which earlier workloads would have raised), placed as in limit1:
        # a CPU limit of one is where a pod's memory limit bites hardest.
        "conns": Shape("conns", "(a′) CPU limit 1, many connections",
                       limit1[1] + "; freshly started proxies, idle connections first",
                       None, None, limit1[0], 1, ["idle", "many"], False),
        "unlimited": Shape("unlimited", f"(b) no CPU limit, {ncpu} CPUs",
                           "nothing pinned and no quota; every proxy at its default sizing for "
                           f"{ncpu} CPUs (nginx {ncpu} workers, haproxy {ncpu} threads, stitch "
                           "sizes itself)", None, None, procs.Placement(), ncpu, common, False),
        "pinned": Shape("pinned", "(c) pinned (A/B layout)",
                        f"load generators on CPU {args.gen_cpus}, backend and proxies on CPU "
                        f"{args.sut_cpus}; one worker each",
                        args.gen_cpus, args.sut_cpus, procs.Placement(cpus=args.sut_cpus), 1,
                        common[:4] + ["grpc_stream", "body"], True, collector_faults=True),
    }
    chosen = []
    for key in args.shapes.split(","):
        if key not in known:
            raise SystemExit(f"unknown shape {key!r}; known: {', '.join(known)}")
        chosen.append(known[key])
    return chosen


HANDED_OUT = set()


def free_port():
    """A port nothing listens on now and that this run has not handed out before (the kernel
    may offer the same free port twice before the first taker binds it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def fill_template(name, workdir, values):
    with open(os.path.join(HERE, name + ".in")) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STITCH_"))}
    env["RUST_LOG"] = "warn"
    env.update(extra)
    return env


def start_backend(bin_dir, workdir, cpus):
    """Starts the benchmark backend; returns the `direct` target (no proxy)."""
    port = free_port()
    backend = start("backend", [os.path.join(bin_dir, "examples", "bench_backend"),
                                f"127.0.0.1:{port}"], workdir, cpus=cpus)
    Probe.backend_pid = backend.pid
    Probe.sut_cpus = procs.parse_cpus(cpus) if isinstance(cpus, str) else None
    return Target("direct", port, port, port)


def start_nginx(workdir, backend_port, cpus, workers=1):
    ports = {"DIR": workdir, "BACKEND": backend_port, "WORKERS": workers,
             "H1": free_port(), "H2": free_port(), "GRPC": free_port()}
    conf = fill_template("nginx.conf", workdir, ports)
    nginx = start("nginx", ["nginx", "-p", workdir, "-c", conf, "-e",
                            os.path.join(workdir, "nginx-error.log")], workdir, cpus=cpus)
    return Target("nginx", ports["H1"], ports["H2"], ports["GRPC"], nginx)


def start_haproxy(workdir, backend_port, cpus, workers=1):
    ports = {"DIR": workdir, "BACKEND": backend_port, "WORKERS": workers,
             "H1": free_port(), "H2": free_port()}
    conf = fill_template("haproxy.cfg", workdir, ports)
    haproxy = start("haproxy", ["haproxy", "-db", "-f", conf], workdir, cpus=cpus)
    return Target("haproxy", ports["H1"], ports["H2"], ports["H2"], haproxy)


def start_otlp_sink(bin_dir, workdir, cpus):
    """Starts the OTLP receiver; returns its base URL.

    It is a sink that reads each export to the end and answers success without decoding
    (examples/bench_otlp_sink.rs): it runs beside the load generators, and a decoding collector
    there delayed them by milliseconds while it worked through a batch, which measured the
    collector instead of the proxy."""
    port = free_port()
    start("otlp-sink", [os.path.join(bin_dir, "examples", "bench_otlp_sink"),
                        f"127.0.0.1:{port}"], workdir, cpus=cpus)
    return f"http://127.0.0.1:{port}"


def otlp_env(sink_url):
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}


def start_stitch(name, binary, workdir, backend_port, cpus, extra=(), env=None, only=None):
    """Starts one stitch in front of the backend, with its admin server for span counters."""
    inbound, admin = free_port(), free_port()
    cmd = [binary, "run", "--inbound-listen", f"127.0.0.1:{inbound}",
           "--inbound-target", f"127.0.0.1:{backend_port}",
           "--admin-listen", f"127.0.0.1:{admin}",
           "--outbound-listen", f"127.0.0.1:{free_port()}", *extra]
    proc = start(name.replace(" ", "").replace("(", "-").replace(")", ""), cmd, workdir,
                 env=clean_env(**(env or {})), cpus=cpus)
    return Target(name, inbound, inbound, inbound, proc, f"http://127.0.0.1:{admin}", only)


def black_hole():
    """A collector that accepts connections (the kernel completes them into the backlog) and
    never reads or answers: exports hang until stitch's timeout. Lives until this script ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    BLACK_HOLES.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


BLACK_HOLES = []


def start_targets(args, workdir, shape):
    """Starts the backend, nginx, haproxy and the stitch instances placed as `shape` says;
    returns the targets and the OTLP receiver's stats URL."""
    proxy = shape.proxy
    direct = start_backend(args.bin_dir, workdir, shape.backend)
    targets = [direct, start_nginx(workdir, direct.h1, proxy, shape.workers),
               start_haproxy(workdir, direct.h1, proxy, shape.workers)]
    sink = start_otlp_sink(args.bin_dir, workdir, shape.gen)
    variants = [
        ("stitch (trace off)", ["--config", os.path.join(HERE, "rules-trace-off.yaml")], {}, None),
        ("stitch (ring)", [], {}, None),
        ("stitch (OTLP)", [], otlp_env(sink), None),
    ]
    if shape.collector_faults:
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        variants += [("stitch (collector down)", [], otlp_env(closed), {"latency"}),
                     ("stitch (black hole)", [], otlp_env(black_hole()), {"latency"})]
    stitch = os.path.join(args.bin_dir, "stitch")
    for name, extra, env, only in variants:
        targets.append(start_stitch(name, stitch, workdir, direct.h1, proxy, extra, env, only))
    return targets, f"{sink}/stats"


COUNTERS = ("stitch_requests_total", "stitch_spans_exported_total", "stitch_spans_dropped_total")


def tracing_evidence(targets, collector_stats_url):
    """What each stitch's counters say after a round: requests served, spans exported, spans
    dropped (by reason) — spans dropped under load would make tracing look cheaper than it is —
    and what the OTLP receiver got (when `collector_stats_url` is given; `ab.py` runs none).
    Returns {target name: {figure: number}}."""
    evidence = {}
    for target in targets:
        if not target.admin_url or target.problem:
            continue
        counts = {}
        try:
            with LOOPBACK.open(f"{target.admin_url}/metrics", timeout=3) as resp:
                text = resp.read().decode(errors="replace")
            for line in text.splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name not in COUNTERS:
                    continue
                key = name.removeprefix("stitch_").removesuffix("_total")
                reason = re.search(r'reason="([^"]*)"', line)
                if reason:
                    key += f" ({reason.group(1)})"
                counts[key] = counts.get(key, 0) + float(line.split()[-1])
        except (OSError, ValueError) as e:
            print(f"  {target.name}: reading its counters failed: {e}", flush=True)
        evidence[target.name] = counts
    if collector_stats_url is None:
        return evidence
    try:
        with LOOPBACK.open(collector_stats_url, timeout=3) as resp:
            stats = json.loads(resp.read())
            evidence["OTLP receiver"] = {"export requests": stats["requests"],
                                         "bytes": stats["bytes"]}
    except (OSError, ValueError, KeyError) as e:
        print(f"  OTLP receiver: GET /stats failed: {e}", flush=True)
    return evidence


def add_evidence(total, evidence):
    for name, counts in evidence.items():
        mine = total.setdefault(name, {})
        for key, value in counts.items():
            mine[key] = mine.get(key, 0) + value


def check_targets(targets, fill_ring=False):
    """Waits until every target answers a plain GET with the backend's own body. With
    `fill_ring`, each proxy then serves 2 s of wrk (8 connections, far more requests than the
    4,096 spans stitch's ring keeps), so its RSS at start includes a full ring and warm
    allocator: what many connections add is then theirs alone."""
    expected = None
    deadline = time.time() + 15
    for target in targets:
        while True:
            if target.proc and target.proc.poll() is not None:
                target.problem = f"exited with code {target.proc.returncode} (see its log)"
                break
            try:
                url = f"http://127.0.0.1:{target.h1}/check"
                with LOOPBACK.open(url, timeout=2) as resp:
                    body = resp.read()
                expected = expected or body
                if body != expected:
                    target.problem = "answered with a different body than the backend"
                break
            except OSError as e:
                if time.time() > deadline:
                    target.problem = f"does not proxy HTTP/1.1 yet ({e})"
                    break
                time.sleep(0.2)
    time.sleep(0.5)  # a proxy that failed to bind one of its listeners exits just after start
    for target in targets:
        if not target.problem and target.proc and target.proc.poll() is not None:
            target.problem = f"exited with code {target.proc.returncode} (see its log)"
        if target.proc and fill_ring and not target.problem:
            run_generator(["wrk", "-t", "1", "-c", "8", "-d", "2s",
                           f"http://127.0.0.1:{target.h1}/fill"], 20, None)
        if target.proc:
            target.rss_start_mib = procs.current_rss_mib(procs.process_tree(target.proc.pid))
        print(f"  {target.name:20} {'OK' if not target.problem else 'SKIPPED: ' + target.problem}",
              flush=True)


# ----------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of figures for one target in one round.


def w_h1(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_share = run_generator(
        ["wrk", "-t", "1", "-c", "50", "-d", f"{args.seconds}s", f"http://127.0.0.1:{target.h1}/"],
        args.seconds + 15, args.gen)
    requests = int(re.search(r"(\d+) requests in", out).group(1)) if rc == 0 else 0
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1)) if requests else 1
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    result = {"rps": requests / seconds, "errors": errors / max(requests, 1),
              "gen_cpu_share": gen_share}
    return probe.finish(result, requests)


def oha_cmd(args, port, seconds=None, db=None):
    """oha at the fixed rate; with `db`, every answered request is also written to that
    sqlite file (its scheduled start and its end), for percentiles over a chosen window, and
    has a random path of its own (wire.py tells requests apart by it)."""
    url = (["--rand-regex-url", f"http://127.0.0.1:{port}/[a-z]{{16}}"] if db else
           [f"http://127.0.0.1:{port}/"])
    return ["oha", "-z", f"{seconds or args.seconds}s", "-q", str(args.rate), "-c", "16",
            "--latency-correction", "--no-tui", "--output-format", "json",
            *(["--db-url", db] if db else []), *url]


def steady_latencies(db, warmup):
    """Latencies (µs) of the requests oha scheduled after `warmup` seconds, from its sqlite
    file. The first second holds oha's own start-up: it opens its 16 connections while the
    schedule runs, and the dozen requests that wait for them (0.5-9 ms, through any proxy and
    directly alike) were on their own the p99.9 of a 3 s window (6,000 requests)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT COALESCE(start_latency_correction, start), end FROM oha "
                           "WHERE status < 500").fetchall()
    finally:
        con.close()
    return sorted((end - start) * 1e6 for start, end in rows if start >= warmup)


def percentile(ordered, q):
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def parse_oha(out):
    # With --db-url oha also prints "Storing results to …" on stderr, which the merged
    # output can hold in the middle of the JSON.
    out = "\n".join(line for line in out.splitlines() if not line.startswith("Storing results"))
    data, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])
    pct = data["latencyPercentiles"]
    return {"p50": pct["p50"] * 1e6, "p99": pct["p99"] * 1e6, "p999": pct["p99.9"] * 1e6,
            "rps": data["summary"]["requestsPerSec"], "ok": data["summary"]["successRate"]}


# A directory to keep each latency window's per-request sqlite files in (ab.py
# --keep-latency-db), for looking at when the slow requests happened; None: removed.
KEEP_LATENCY_DB = [None]


def w_latency(args, target, direct):
    if target.proc is None:
        return None  # direct is the baseline of every pair, not a pair of its own
    probe = Probe(target)
    sut_pids = probe.pids + [Probe.backend_pid]
    realtime = args.shape.realtime
    seconds = args.latency_seconds
    dbs = [os.path.join(tempfile.gettempdir(), f"stitch-bench-oha-{os.getpid()}-{side}.db")
           for side in ("proxied", "direct")]
    for db in dbs:
        if os.path.exists(db):
            os.remove(db)
    capture = None
    if args.wire and wire.available():
        capture = wire.Capture(os.path.join(tempfile.gettempdir(),
                                            f"stitch-bench-wire-{os.getpid()}.pcap"),
                               (target.h1, direct.h1), args.gen)
    if realtime:
        procs.set_realtime(sut_pids, True)
    try:
        spawned = [spawn_generator(oha_cmd(args, target.h1, seconds, dbs[0]), args.gen,
                                   realtime=realtime),
                   spawn_generator(oha_cmd(args, direct.h1, seconds, dbs[1]), args.gen,
                                   realtime=realtime)]
        (rc_p, out_p, share_p), (rc_d, out_d, share_d) = wait_generators(spawned, seconds + 20)
    finally:
        if realtime:
            procs.set_realtime(sut_pids, False)
        dropped = capture.stop() if capture else None
    added = None
    if capture:
        added = wire.added_latencies(capture.path, target.h1, direct.h1, args.latency_warmup)
        os.remove(capture.path)
    if rc_p != 0 or rc_d != 0:
        raise RuntimeError(f"oha failed: {out_p[-300:]} {out_d[-300:]}")
    proxied, baseline = parse_oha(out_p), parse_oha(out_d)
    warmup = args.latency_warmup
    steady = [steady_latencies(db, warmup) for db in dbs]
    for db, side in zip(dbs, ("proxied", "direct")):
        if KEEP_LATENCY_DB[0]:
            os.makedirs(KEEP_LATENCY_DB[0], exist_ok=True)
            shutil.move(db, os.path.join(KEEP_LATENCY_DB[0],
                                         f"{target.name}-{int(time.time())}-{side}.db"))
        else:
            os.remove(db)
    (p50, p99, p999), (d50, d99, d999) = (
        [percentile(xs, q) for q in (0.5, 0.99, 0.999)] for xs in steady)
    result = {
        "p50": p50, "p99": p99, "p999": p999,
        "direct_p99": d99,
        "added_p50": p50 - d50,
        "added_p99": p99 - d99,
        "added_p999": p999 - d999,
        # The whole window, start-up included (oha's own percentiles), for comparison.
        "added_p999_with_startup": proxied["p999"] - baseline["p999"],
        "samples": len(steady[0]),
        "errors": 1 - proxied["ok"],
        "gen_cpu_share": share_p + share_d,
    }
    if added is not None:
        # A capture that lost packets, or matched too few requests, is no measurement.
        if dropped == 0 and len(added) >= len(steady[0]) * 0.9:
            result.update({f"wire_added_{name}": percentile(added, q)
                           for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))})
        else:
            print(f"    {target.name}: wire capture unusable (dropped {dropped}, "
                  f"{len(added)} of {len(steady[0])} requests matched)", flush=True)
    return probe.finish(result, proxied["rps"] * seconds)


def w_h2(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_share = run_generator(
        ["h2load", "-t", "1", "-c", "4", "-m", "64", "-D", str(args.seconds),
         "--warm-up-time", "300ms", f"http://127.0.0.1:{target.h2}/"],
        args.seconds + 15, args.gen)
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    ok = int(done.group(1)) if done else 0
    failed = int(done.group(2)) + int(done.group(3)) if done else 1
    result = {"rps": ok / args.seconds, "errors": failed / max(ok + failed, 1),
              "gen_cpu_share": gen_share}
    return probe.finish(result, ok)


def wrk_latency_us(text):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def parse_wrk(out):
    """Requests, seconds, socket errors by kind, latency mean/sd and percentiles (µs) from
    `wrk --latency` output."""
    figures = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
               "seconds": float(re.search(r"requests in ([\d.]+)s", out).group(1))}
    for kind in ("connect", "read", "write", "timeout"):
        found = re.search(rf"{kind} (\d+)", out)
        figures[kind] = int(found.group(1)) if found else 0
    stats = re.search(r"Latency\s+([\d.]+(?:us|ms|s))\s+([\d.]+(?:us|ms|s))", out)
    if stats:
        figures["mean"], figures["sd"] = (wrk_latency_us(v) for v in stats.groups())
    for pct in ("50", "90", "99"):
        found = re.search(rf"\s{pct}%\s+([\d.]+(?:us|ms|s))", out)
        if found:
            figures[f"p{pct}"] = wrk_latency_us(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return figures


TRICKLERS = 500
SLOWLORIS_TARGETS = ("nginx", "haproxy", "stitch (ring)")


def w_slowloris(args, target, _direct):
    """p99 of normal requests at the fixed rate, alone and then while 500 clients trickle
    request heads at one byte a second. The loaded window outlasts stitch's 10 s header-read
    timeout, so closing and reconnecting tricklers happen inside it."""
    if target.name not in SLOWLORIS_TARGETS:
        return None
    rc, out, _ = run_generator(oha_cmd(args, target.h1), args.seconds + 20, args.gen)
    if rc != 0:
        raise RuntimeError(f"oha failed: {out[-300:]}")
    baseline = parse_oha(out)
    probe = Probe(target)  # CPU and peak RSS of the loaded window only
    window = max(12, args.seconds)
    holder = subprocess.Popen(
        [sys.executable, "-B", os.path.join(HERE, "trickle_clients.py"), str(target.h1),
         str(TRICKLERS), str(window + 1)], stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    procs.STARTED.append(holder)
    try:
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the trickling clients did not get ready")
        loaded_args = argparse.Namespace(**{**vars(args), "seconds": window})
        rc, out, gen_share = run_generator(oha_cmd(loaded_args, target.h1), window + 20,
                                           args.gen)
        trickled = json.loads(holder.stdout.readline())
    finally:
        holder.wait(timeout=90)
        procs.STARTED.remove(holder)
    if rc != 0:
        raise RuntimeError(f"oha failed: {out[-300:]}")
    loaded = parse_oha(out)
    result = {"base_p99": baseline["p99"], "p99": loaded["p99"],
              "p99_ratio": loaded["p99"] / max(baseline["p99"], 1.0),
              "trickle_opened": trickled["opened"], "trickle_closed": trickled["closed_by_proxy"],
              "trickle_408": trickled["answered_408"], "errors": 1 - loaded["ok"],
              "gen_cpu_share": gen_share}
    return probe.finish(result, loaded["rps"] * window)


MANY = 5000


def w_many(args, target, _direct):
    """5,000 concurrent keep-alive clients, closed loop: memory per connection and fairness."""
    if target.proc is None:
        return None
    probe = Probe(target)
    seconds = max(4, 2 * args.seconds)
    rc, out, gen_share = run_generator(
        ["wrk", "-t", "2", "-c", str(MANY), "-d", f"{seconds}s", "--timeout", "2s", "--latency",
         f"http://127.0.0.1:{target.h1}/"], seconds + 30, args.gen)
    if rc != 0 or "requests in" not in out:
        raise RuntimeError(f"wrk failed: {out[-300:]}")
    w = parse_wrk(out)
    result = {"rps": w["requests"] / w["seconds"], "timeouts": w["timeout"],
              "socket_errors": w["connect"] + w["read"] + w["write"],
              "errors": w["non2xx"] / max(w["requests"], 1), "gen_cpu_share": gen_share}
    for key in ("mean", "sd", "p50", "p90", "p99"):
        if key in w:
            result[f"lat_{key}"] = w[key]
    result = probe.finish(result, w["requests"])
    result["rss_start_mib"] = target.rss_start_mib
    result["kib_per_conn"] = (result["rss_mib"] - target.rss_start_mib) * 1024 / MANY
    return result


def w_idle(args, target, _direct):
    """5,000 idle keep-alive connections held open while 50 active clients run."""
    if target.proc is None:
        return None
    probe = Probe(target)
    holder = subprocess.Popen(
        [sys.executable, "-B", os.path.join(HERE, "idle_clients.py"), str(target.h1), str(MANY),
         str(args.seconds + 1)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    procs.STARTED.append(holder)
    try:
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle clients did not get ready")
        rc, out, gen_share = run_generator(
            ["wrk", "-t", "1", "-c", "50", "-d", f"{args.seconds}s", "--latency",
             f"http://127.0.0.1:{target.h1}/"], args.seconds + 15, args.gen)
        held = json.loads(holder.stdout.readline())
    finally:
        holder.wait(timeout=30)
        procs.STARTED.remove(holder)
    if rc != 0 or "requests in" not in out:
        raise RuntimeError(f"wrk failed: {out[-300:]}")
    w = parse_wrk(out)
    result = {"rps": w["requests"] / w["seconds"], "idle_opened": held["opened"],
              "idle_closed": held["closed_by_proxy"], "idle_opening_s": held["opening_s"],
              "errors": (w["non2xx"] + held["failed"]) / max(w["requests"], 1),
              "gen_cpu_share": gen_share}
    for key in ("p50", "p99"):
        if key in w:
            result[f"lat_{key}"] = w[key]
    result = probe.finish(result, w["requests"])
    result["rss_start_mib"] = target.rss_start_mib
    result["kib_per_conn"] = (result["rss_mib"] - target.rss_start_mib) * 1024 / MANY
    return result


def grpc_workload(mode):
    def run(args, target, _direct):
        probe = Probe(target)
        seconds = max(1, args.seconds - 1)
        rc, out, gen_share = run_generator(
            [os.path.join(args.bin_dir, "examples", "bench_grpc_load"),
             f"http://127.0.0.1:{target.grpc}", mode, str(seconds), "32", "2"],
            seconds + 15, args.gen)
        if rc != 0 or "{" not in out:
            raise RuntimeError(f"bench_grpc_load failed: {out[-300:]}")
        data = json.loads(out[out.index("{"):])
        result = {"rps": data["rps"], "p99": data["p99_us"],
                  "errors": data["errors"] / max(data["requests"] + data["errors"], 1),
                  "gen_cpu_share": gen_share}
        return probe.finish(result, data["requests"])
    return run


def w_body(args, target, _direct, upload_file):
    base = f"http://127.0.0.1:{target.h1}"
    probe = Probe(target)
    fmt = "%{http_code} %{size_download} %{size_upload} %{time_total}"
    curl = ["curl", "-s", "--noproxy", "*", "-o", "/dev/null", "--max-time", "60",
            "-H", "Expect:", "-w", fmt]
    _, down, _ = run_generator(curl + [f"{base}/bytes/{GIB}"], 70, args.gen)
    _, up, _ = run_generator(curl + ["-T", upload_file, f"{base}/upload"], 70, args.gen)
    result = {"errors": 0.0}
    for key, out, size_field in (("down_mbps", down, 1), ("up_mbps", up, 2)):
        fields = out.split()
        ok = len(fields) == 4 and fields[0] == "200" and int(fields[size_field]) == GIB
        result[key] = GIB / float(fields[3]) / 1e6 if ok else 0.0
        result["errors"] += 0.0 if ok else 0.5
    # CPU is per GiB moved (two GiB per round), reported in seconds.
    return probe.finish(result, 2, per=1)


# ----------------------------------------------------------------------------------------------
# Rounds


def machine_description():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / (1 << 20)

    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "not found"

    return {
        "nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
        "memory": f"{mem_gib:.1f} GiB",
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "nginx": version(["nginx", "-v"]), "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]), "h2load": version(["h2load", "--version"]),
        "oha": version(["oha", "--version"]), "curl": version(["curl", "--version"]),
    }


def run_shape_round(args, shape, rnd, workdir, workloads, results, evidence):
    """Starts every target placed as `shape` says, runs each workload against each target
    (order rotated by round), records the figures, and stops them all."""
    args.shape, args.gen = shape, shape.gen
    print(f"round {rnd + 1}/{args.rounds}, shape {shape.title}", flush=True)
    try:
        targets, collector_stats_url = start_targets(args, workdir, shape)
        check_targets(targets, fill_ring=shape.key == "conns")
        direct = targets[0]
        if direct.problem:
            raise SystemExit(f"the backend does not answer: {direct.problem}")
        live = [t for t in targets if not t.problem]
        order = live[rnd % len(live):] + live[:rnd % len(live)]
        for wname in shape.workloads:
            if wname not in workloads:
                continue
            for target in order:
                if target.only is not None and wname not in target.only:
                    continue
                if target.proc and target.proc.poll() is not None:
                    target.problem = f"exited with code {target.proc.returncode} mid-run"
                    print(f"  {wname:12} {target.name:24} SKIPPED: exited with code "
                          f"{target.proc.returncode} (see its log)", flush=True)
                    continue
                try:
                    figures = workloads[wname](args, target, direct)
                except (RuntimeError, OSError, ValueError, AttributeError, KeyError) as e:
                    print(f"  {wname:12} {target.name:24} FAILED: {e}", flush=True)
                    figures = {"failed": 1}
                if figures is None:
                    continue
                mine = results.setdefault(shape.key, {}).setdefault(target.name, {})
                for key, value in figures.items():
                    mine.setdefault(f"{wname}.{key}", []).append(value)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
                print(f"  {wname:12} {target.name:24} {shown}", flush=True)
        add_evidence(evidence.setdefault(shape.key, {}),
                     tracing_evidence(targets, collector_stats_url))
        return {t.name: t.problem for t in targets if t.problem}
    finally:
        procs.stop_all()


def measure_memory_limit(args, workdir):
    """The memory-limit workload (memory_limit.py), written as its own section of the report."""
    import memory_limit
    results = memory_limit.run_all(args.bin_dir, workdir)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    memory_limit.write_section(args.out, memory_limit.section(results, args.command, date,
                                                              git_commit()))
    with open(os.path.join(workdir, "memory-limit.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote the memory-limit section of {args.out}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="cargo's release dir (stitch, examples/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="length of each measurement")
    parser.add_argument("--rate", type=int, default=2000, help="open-loop rate, req/s")
    parser.add_argument("--latency-seconds", type=int, default=10,
                        help="length of each latency measurement (p99.9 needs samples)")
    parser.add_argument("--latency-warmup", type=float, default=1.0,
                        help="seconds at the start of each latency measurement left out of "
                             "its percentiles (oha opening its connections)")
    parser.add_argument("--no-wire", dest="wire", action="store_false",
                        help="latency: do not also time requests on the wire (tcpdump on lo)")
    parser.add_argument("--budget", type=int, default=1800, help="seconds for all rounds")
    parser.add_argument("--shapes", default="limit1,unlimited,pinned,conns",
                        help="comma-separated: limit1, unlimited, pinned, conns (module doc)")
    parser.add_argument("--workloads",
                        default="h1,latency,h2,grpc_unary,grpc_stream,body,many,idle,slowloris",
                        help="comma-separated subset of the workloads")
    parser.add_argument("--gen-cpus", default="0",
                        help="taskset CPUs of the load generators (pinned shape)")
    parser.add_argument("--sut-cpus", default="1",
                        help="taskset CPUs of backend and proxies (pinned shape)")
    parser.add_argument("--nice", type=int, default=-10,
                        help="niceness of everything measured (ignored unless root)")
    parser.add_argument("--realtime", type=int, default=10,
                        help="SCHED_FIFO priority for the latency workload of the pinned shape, "
                             "0 = off (root only)")
    parser.add_argument("--only", choices=["many-connections", "memory-limit"],
                        help="many-connections: the conns shape's workloads alone; replaces "
                             "only the Many connections section of --out. memory-limit: "
                             "10,000 clients against stitch under a 64 MiB limit "
                             "(memory_limit.py); replaces only its section")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--command", default="make bench", help="recorded in the report")
    args = parser.parse_args()
    if args.only == "memory-limit" and args.command == "make bench":
        args.command = 'make bench BENCH_ARGS="--only memory-limit"'
    if args.only == "many-connections":
        args.shapes, args.workloads = "conns", "idle,many"
        if args.command == "make bench":
            args.command = f'make bench BENCH_ARGS="{" ".join(sys.argv[1:])}"'.replace(
                f"--bin-dir {args.bin_dir} ", "")

    procs.NICENESS[0] = args.nice if os.geteuid() == 0 else 0
    # 5,000 clients and as many upstream connections: every process started inherits this.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs.REALTIME_PRIORITY[0] = args.realtime if os.geteuid() == 0 else 0
    signal.signal(signal.SIGTERM, procs.on_signal)
    signal.signal(signal.SIGHUP, procs.on_signal)
    signal.signal(signal.SIGINT, procs.on_signal)  # also when started in the background
    atexit.register(procs.stop_all)
    workdir = tempfile.mkdtemp(prefix="stitch-bench-")
    upload_file = os.path.join(workdir, "upload-1GiB.bin")
    with open(upload_file, "wb") as f:
        f.truncate(GIB)  # sparse: no disk written, and reading it costs curl almost nothing
    with open(upload_file, "rb") as f:
        while f.read(1 << 24):
            pass  # warm the page cache so the first upload is not slower than the others

    machine = machine_description()
    chosen = shapes(args)
    workloads = {"h1": w_h1, "latency": w_latency, "h2": w_h2,
                 "grpc_unary": grpc_workload("unary"), "grpc_stream": grpc_workload("stream"),
                 "body": lambda a, t, d: w_body(a, t, d, upload_file),
                 "many": w_many, "idle": w_idle, "slowloris": w_slowloris}
    workloads = {k: v for k, v in workloads.items() if k in args.workloads.split(",")}
    if shutil.which("oha") is None:
        print("  oha not found: the latency workload is skipped", flush=True)
        workloads.pop("latency", None)
    print(f"stitch bench: logs in {workdir}", flush=True)
    if args.only == "memory-limit":
        try:
            measure_memory_limit(args, workdir)
        finally:
            procs.stop_all()
            os.remove(upload_file)
        return
    try:
        results, evidence, skipped = {}, {}, {}
        began = time.time()
        rounds_done = 0
        for rnd in range(args.rounds):
            round_began = time.time()
            # Shapes rotate too, so none is always measured first (or last) in a round.
            for shape in chosen[rnd % len(chosen):] + chosen[:rnd % len(chosen)]:
                problems = run_shape_round(args, shape, rnd, workdir, workloads, results,
                                           evidence)
                for name, why in problems.items():
                    skipped[f"{shape.key}: {name}"] = why
            rounds_done += 1
            elapsed, last = time.time() - began, time.time() - round_began
            if rnd + 1 < args.rounds and elapsed + last > args.budget:
                print(f"stopping after {rounds_done} rounds: the next would pass the "
                      f"{args.budget}s budget", flush=True)
                break

        run = {"machine": machine, "rounds": rounds_done, "seconds": args.seconds,
               "rate": args.rate, "latency_seconds": args.latency_seconds,
               "latency_warmup": args.latency_warmup, "nice": procs.NICENESS[0],
               "realtime": procs.REALTIME_PRIORITY[0],
               "shapes": [{"key": sh.key, "title": sh.title, "what": sh.what,
                           "realtime": sh.realtime} for sh in chosen],
               "command": args.command, "duration_s": round(time.time() - began),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "skipped": skipped, "tracing": evidence, "results": results}
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(run, f, indent=1)
        if args.only:
            write_conns_section(run, args.out)
        else:
            write_report(run, args.out)
        print(f"wrote {args.out} (raw figures: {workdir}/results.json)", flush=True)
        if not args.only:
            procs.stop_all()
            measure_memory_limit(args, workdir)
    finally:
        procs.stop_all()
        os.remove(upload_file)


if __name__ == "__main__":
    main()
