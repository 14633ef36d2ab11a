#!/usr/bin/env python3
"""The measurement half of `make bench` (bench.sh installs the tools and builds first).

Starts one backend and every proxy in front of it, then, in rounds, runs each workload against
each target, rotating the order every round so slow drifts of this noisy VM spread evenly.
Everything is on loopback, every measurement has a time bound, and every process this script
starts is killed when it exits (normally, on error, or on Ctrl-C).

Targets: direct (no proxy), nginx, haproxy, stitch with tracing off, stitch tracing to its
in-memory ring, stitch exporting OTLP/HTTP to a receiver that accepts without decoding
(examples/bench_otlp_sink.rs).

Workloads (per target per round):
  h1       wrk, 50 connections, closed loop                 -> req/s, proxy CPU s / 10k req
  latency  oha at a fixed rate, PAIRED with a second oha     -> added p50/p99/p99.9, peak RSS
           driving the backend directly in the same window
  h2       h2load, h2c prior knowledge, many streams         -> req/s, proxy CPU s / 10k req
  grpc     bench_grpc_load unary and bidi streaming          -> req/s (msg/s), CPU s / 10k
  body     1 GiB download and 1 GiB upload with curl         -> MB/s, peak RSS, CPU s / GiB

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # keep scripts/bench free of __pycache__
import procs  # noqa: E402
from procs import Probe, run_generator, spawn_generator, start, wait_generators  # noqa: E402
from report import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Loopback requests must never go through a proxy named in the caller's environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GIB = 1 << 30

# ----------------------------------------------------------------------------------------------
# Targets


class Target:
    def __init__(self, name, h1, h2, grpc, proc=None, admin_url=None):
        self.name, self.h1, self.h2, self.grpc, self.proc = name, h1, h2, grpc, proc
        self.admin_url = admin_url  # stitch's admin server, for its span counters
        self.problem = None  # set when the target cannot serve; it is then skipped


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
    Probe.sut_cpus = procs.parse_cpus(cpus)
    return Target("direct", port, port, port)


def start_nginx(workdir, backend_port, cpus):
    ports = {"DIR": workdir, "BACKEND": backend_port,
             "H1": free_port(), "H2": free_port(), "GRPC": free_port()}
    conf = fill_template("nginx.conf", workdir, ports)
    nginx = start("nginx", ["nginx", "-p", workdir, "-c", conf, "-e",
                            os.path.join(workdir, "nginx-error.log")], workdir, cpus=cpus)
    return Target("nginx", ports["H1"], ports["H2"], ports["GRPC"], nginx)


def start_haproxy(workdir, backend_port, cpus):
    ports = {"DIR": workdir, "BACKEND": backend_port, "H1": free_port(), "H2": free_port()}
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


def start_stitch(name, binary, workdir, backend_port, cpus, extra=(), env=None):
    """Starts one stitch in front of the backend, with its admin server for span counters."""
    inbound, admin = free_port(), free_port()
    cmd = [binary, "run", "--inbound-listen", f"127.0.0.1:{inbound}",
           "--inbound-target", f"127.0.0.1:{backend_port}",
           "--admin-listen", f"127.0.0.1:{admin}",
           "--outbound-listen", f"127.0.0.1:{free_port()}", *extra]
    proc = start(name.replace(" ", "").replace("(", "-").replace(")", ""), cmd, workdir,
                 env=clean_env(**(env or {})), cpus=cpus)
    return Target(name, inbound, inbound, inbound, proc, f"http://127.0.0.1:{admin}")


def start_targets(args, workdir):
    """Starts the backend, nginx, haproxy and the stitch instances; returns the targets and
    the OTLP receiver's stats URL."""
    sut, gen = args.sut_cpus, args.gen_cpus
    direct = start_backend(args.bin_dir, workdir, sut)
    targets = [direct, start_nginx(workdir, direct.h1, sut), start_haproxy(workdir, direct.h1, sut)]
    sink = start_otlp_sink(args.bin_dir, workdir, gen)
    variants = [
        ("stitch (trace off)", ["--config", os.path.join(HERE, "rules-trace-off.yaml")], {}),
        ("stitch (ring)", [], {}),
        ("stitch (OTLP)", [], otlp_env(sink)),
    ]
    stitch = os.path.join(args.bin_dir, "stitch")
    for name, extra, env in variants:
        targets.append(start_stitch(name, stitch, workdir, direct.h1, sut, extra, env))
    return targets, f"{sink}/stats"


def tracing_evidence(targets, collector_traces_url):
    """What each stitch's span counters say after the run (spans dropped under load would make
    tracing look cheaper than it is), and whether the OTLP receiver holds spans."""
    evidence = {}
    for target in targets:
        if not target.admin_url or target.problem:
            continue
        try:
            with LOOPBACK.open(f"{target.admin_url}/metrics", timeout=3) as resp:
                text = resp.read().decode(errors="replace")
            counts = {}
            for line in text.splitlines():
                for counter in ("stitch_spans_exported_total", "stitch_spans_dropped_total"):
                    if line.startswith(counter):
                        counts[counter] = counts.get(counter, 0) + float(line.split()[-1])
            with LOOPBACK.open(f"{target.admin_url}/traces", timeout=3) as resp:
                in_ring = len(json.loads(resp.read()).get("traces", []))
            evidence[target.name] = ", ".join(
                [f"{in_ring:,} traces in its ring"] +
                [f"{k.removeprefix('stitch_').removesuffix('_total')} {v:,.0f}"
                 for k, v in counts.items()])
        except (OSError, ValueError, AttributeError) as e:
            evidence[target.name] = f"admin read failed: {e}"
    try:
        with LOOPBACK.open(collector_traces_url, timeout=3) as resp:
            stats = json.loads(resp.read())
            evidence["OTLP receiver"] = (f"{stats['requests']:,} export requests, "
                                         f"{stats['bytes']:,} bytes of spans")
    except OSError as e:
        evidence["OTLP receiver"] = f"GET /stats failed: {e}"
    return evidence


def check_targets(targets):
    """Waits until every target answers a plain GET with the backend's own body."""
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
        print(f"  {target.name:20} {'OK' if not target.problem else 'SKIPPED: ' + target.problem}",
              flush=True)


# ----------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of figures for one target in one round.


def w_h1(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_share = run_generator(
        ["wrk", "-t", "1", "-c", "50", "-d", f"{args.seconds}s", f"http://127.0.0.1:{target.h1}/"],
        args.seconds + 15, args.gen_cpus)
    requests = int(re.search(r"(\d+) requests in", out).group(1)) if rc == 0 else 0
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1)) if requests else 1
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    result = {"rps": requests / seconds, "errors": errors / max(requests, 1),
              "gen_cpu_share": gen_share}
    return probe.finish(result, requests)


def oha_cmd(args, port):
    return ["oha", "-z", f"{args.seconds}s", "-q", str(args.rate), "-c", "16",
            "--latency-correction", "--no-tui", "--output-format", "json",
            f"http://127.0.0.1:{port}/"]


def parse_oha(out):
    data = json.loads(out[out.index("{"):])
    pct = data["latencyPercentiles"]
    return {"p50": pct["p50"] * 1e6, "p99": pct["p99"] * 1e6, "p999": pct["p99.9"] * 1e6,
            "rps": data["summary"]["requestsPerSec"], "ok": data["summary"]["successRate"]}


def w_latency(args, target, direct):
    if target.proc is None:
        return None  # direct is the baseline of every pair, not a pair of its own
    probe = Probe(target)
    sut_pids = probe.pids + [Probe.backend_pid]
    procs.set_realtime(sut_pids, True)
    try:
        spawned = [spawn_generator(oha_cmd(args, target.h1), args.gen_cpus, realtime=True),
                   spawn_generator(oha_cmd(args, direct.h1), args.gen_cpus, realtime=True)]
        (rc_p, out_p, share_p), (rc_d, out_d, share_d) = wait_generators(spawned,
                                                                         args.seconds + 20)
    finally:
        procs.set_realtime(sut_pids, False)
    if rc_p != 0 or rc_d != 0:
        raise RuntimeError(f"oha failed: {out_p[-300:]} {out_d[-300:]}")
    proxied, baseline = parse_oha(out_p), parse_oha(out_d)
    result = {
        "p50": proxied["p50"], "p99": proxied["p99"], "p999": proxied["p999"],
        "direct_p99": baseline["p99"],
        "added_p50": proxied["p50"] - baseline["p50"],
        "added_p99": proxied["p99"] - baseline["p99"],
        "added_p999": proxied["p999"] - baseline["p999"],
        "errors": 1 - proxied["ok"],
        "gen_cpu_share": share_p + share_d,
    }
    return probe.finish(result, proxied["rps"] * args.seconds)


def w_h2(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_share = run_generator(
        ["h2load", "-t", "1", "-c", "4", "-m", "64", "-D", str(args.seconds),
         "--warm-up-time", "300ms", f"http://127.0.0.1:{target.h2}/"],
        args.seconds + 15, args.gen_cpus)
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    ok = int(done.group(1)) if done else 0
    failed = int(done.group(2)) + int(done.group(3)) if done else 1
    result = {"rps": ok / args.seconds, "errors": failed / max(ok + failed, 1),
              "gen_cpu_share": gen_share}
    return probe.finish(result, ok)


def grpc_workload(mode):
    def run(args, target, _direct):
        probe = Probe(target)
        seconds = max(1, args.seconds - 1)
        rc, out, gen_share = run_generator(
            [os.path.join(args.bin_dir, "examples", "bench_grpc_load"),
             f"http://127.0.0.1:{target.grpc}", mode, str(seconds), "32", "2"],
            seconds + 15, args.gen_cpus)
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
    _, down, _ = run_generator(curl + [f"{base}/bytes/{GIB}"], 70, args.gen_cpus)
    _, up, _ = run_generator(curl + ["-T", upload_file, f"{base}/upload"], 70, args.gen_cpus)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="cargo's release dir (stitch, examples/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="length of each measurement")
    parser.add_argument("--rate", type=int, default=2000, help="open-loop rate, req/s")
    parser.add_argument("--budget", type=int, default=540, help="seconds for all rounds")
    parser.add_argument("--gen-cpus", default="0", help="taskset CPUs of the load generators")
    parser.add_argument("--sut-cpus", default="1", help="taskset CPUs of backend and proxies")
    parser.add_argument("--nice", type=int, default=-10,
                        help="niceness of everything measured (ignored unless root)")
    parser.add_argument("--realtime", type=int, default=10,
                        help="SCHED_FIFO priority for the latency workload, 0 = off (root only)")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--command", default="make bench", help="recorded in the report")
    args = parser.parse_args()

    procs.NICENESS[0] = args.nice if os.geteuid() == 0 else 0
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
    print(f"stitch bench: logs in {workdir}", flush=True)
    try:
        targets, collector_traces_url = start_targets(args, workdir)
        check_targets(targets)
        direct = targets[0]
        if direct.problem:
            raise SystemExit(f"the backend does not answer: {direct.problem}")
        live = [t for t in targets if not t.problem]

        workloads = [("h1", w_h1), ("latency", w_latency), ("h2", w_h2),
                     ("grpc_unary", grpc_workload("unary")),
                     ("grpc_stream", grpc_workload("stream")),
                     ("body", lambda a, t, d: w_body(a, t, d, upload_file))]
        if shutil.which("oha") is None:
            print("  oha not found: the latency workload is skipped", flush=True)
            workloads = [w for w in workloads if w[0] != "latency"]

        results = {t.name: {} for t in targets}
        began = time.time()
        rounds_done = 0
        for rnd in range(args.rounds):
            round_began = time.time()
            order = live[rnd % len(live):] + live[:rnd % len(live)]
            print(f"round {rnd + 1}/{args.rounds}: order {[t.name for t in order]}", flush=True)
            for wname, workload in workloads:
                for target in order:
                    if target.proc and target.proc.poll() is not None:
                        target.problem = f"exited with code {target.proc.returncode} mid-run"
                        print(f"  {wname:12} {target.name:20} SKIPPED: exited with code "
                              f"{target.proc.returncode} (see its log)", flush=True)
                        continue
                    try:
                        figures = workload(args, target, direct)
                    except (RuntimeError, OSError, ValueError, AttributeError, KeyError) as e:
                        print(f"  {wname:12} {target.name:20} FAILED: {e}", flush=True)
                        figures = {"failed": 1}
                    if figures is None:
                        continue
                    for key, value in figures.items():
                        results[target.name].setdefault(f"{wname}.{key}", []).append(value)
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
                    print(f"  {wname:12} {target.name:20} {shown}", flush=True)
            rounds_done += 1
            elapsed, last = time.time() - began, time.time() - round_began
            if rnd + 1 < args.rounds and elapsed + last > args.budget:
                print(f"stopping after {rounds_done} rounds: the next would pass the "
                      f"{args.budget}s budget", flush=True)
                break

        run = {"machine": machine, "rounds": rounds_done, "seconds": args.seconds,
               "rate": args.rate, "gen_cpus": args.gen_cpus, "sut_cpus": args.sut_cpus,
               "nice": procs.NICENESS[0], "realtime": procs.REALTIME_PRIORITY[0],
               "command": args.command, "duration_s": round(time.time() - began),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "skipped": {t.name: t.problem for t in targets if t.problem},
               "tracing": tracing_evidence(targets, collector_traces_url),
               "results": results}
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(run, f, indent=1)
        write_report(run, args.out)
        print(f"wrote {args.out} (raw figures: {workdir}/results.json)", flush=True)
    finally:
        procs.stop_all()
        os.remove(upload_file)


if __name__ == "__main__":
    main()
