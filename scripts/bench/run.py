#!/usr/bin/env python3
"""The measurement half of `make bench` (bench.sh installs the tools and builds first).

Starts one backend and every proxy in front of it, then, in rounds, runs each workload against
each target, rotating the order every round so slow drifts of this noisy VM spread evenly.
Everything is on loopback, every measurement has a time bound, and every process this script
starts is killed when it exits (normally, on error, or on Ctrl-C).

Targets: direct (no proxy), nginx, haproxy, stitch with tracing off, stitch tracing to its
in-memory ring, stitch exporting OTLP/HTTP to a second stitch's admin receiver.

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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # keep scripts/bench free of __pycache__
from report import write_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ----------------------------------------------------------------------------------------------
# Process control: everything started here is remembered and killed (its process group) at exit.

STARTED = []
# `nice` value for everything measured; negative (root only) so other work on a shared machine
# yields the pinned cores to the benchmark instead of adding its noise to the figures.
NICENESS = [0]


def prioritise(pid):
    """Each process here starts its own session, and with the kernel's autogroup scheduling a
    session's weight, not the process's nice value, decides its share against other sessions:
    so the niceness is set on the autogroup too."""
    if NICENESS[0] == 0:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(NICENESS[0]))
    except OSError:
        pass  # no autogroup support: plain nice still applies


def pinned(cmd, cpus):
    prefix = ["taskset", "-c", cpus]
    if NICENESS[0] != 0:
        prefix = ["nice", "-n", str(NICENESS[0])] + prefix
    return prefix + cmd


def start(name, cmd, workdir, env=None, cpus=None):
    """Starts a long-running process in its own process group, logging to workdir/name.log."""
    if cpus is not None:
        cmd = pinned(cmd, cpus)
    log = open(os.path.join(workdir, f"{name}.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    proc.bench_name = name
    prioritise(proc.pid)
    STARTED.append(proc)
    return proc


def stop_all():
    for proc in reversed(STARTED):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 3
    for proc in STARTED:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    STARTED.clear()


def on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def run_generator(cmd, timeout_s, cpus):
    """Runs a load generator to completion (killed after timeout_s).

    Returns (exit code, stdout text, CPU seconds the generator itself used).
    """
    return wait_generators([spawn_generator(cmd, cpus)], timeout_s)[0]


def spawn_generator(cmd, cpus):
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(pinned(cmd, cpus), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    prioritise(proc.pid)
    STARTED.append(proc)
    return proc, out


def wait_generators(spawned, timeout_s):
    deadline = time.time() + timeout_s
    results = []
    for proc, out in spawned:
        status, usage = None, None
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
            elif time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
            else:
                time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        STARTED.remove(proc)
        out.seek(0)
        text = out.read().decode(errors="replace")
        out.close()
        results.append((proc.returncode, text, usage.ru_utime + usage.ru_stime))
    return results


# ----------------------------------------------------------------------------------------------
# /proc readings


def process_tree(pid):
    """pid and its descendants (nginx's worker runs beside its master)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def reset_peak_rss(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass  # the peak then covers the process lifetime; still an upper bound


def peak_rss_mib(pids):
    total_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def parse_cpus(spec):
    cpus = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def core_busy_seconds(cpus):
    """Busy time (everything but idle and iowait, steal included) of the given CPUs."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *ticks = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks[:8])
                busy += user + nice + system + irq + softirq + steal
    return busy / CLK_TCK


class Probe:
    """CPU and peak RSS of a target's proxy processes across one workload, and how busy the
    proxy and the backend kept their (shared) core: near 100% together means that core, not
    the proxy's efficiency alone, bounds closed-loop throughput."""

    backend_pid = None  # set once the backend runs
    sut_cpus = set()  # the CPUs the backend and proxies are pinned to

    def __init__(self, target):
        self.pids = process_tree(target.proc.pid) if target.proc else []
        reset_peak_rss(self.pids)
        self.cpu_start = cpu_seconds(self.pids)
        self.backend_start = cpu_seconds([Probe.backend_pid])
        self.core_start = core_busy_seconds(Probe.sut_cpus)
        self.wall_start = time.time()

    def finish(self, result, work_units, per=10_000):
        """Adds cpu (seconds per `per` work units), rss_mib and the core shares to result."""
        wall = time.time() - self.wall_start
        backend = cpu_seconds([Probe.backend_pid]) - self.backend_start
        used = cpu_seconds(self.pids) - self.cpu_start if self.pids else 0.0
        result["backend_core"] = backend / wall
        # Whatever else ran on the proxy's core meanwhile (other processes, hypervisor steal).
        others = core_busy_seconds(Probe.sut_cpus) - self.core_start - backend - used
        result["other_core"] = max(0.0, others) / wall
        if self.pids:
            if work_units > 0:
                result["cpu"] = used / work_units * per
            result["proxy_core"] = used / wall
            result["rss_mib"] = peak_rss_mib(self.pids)
        return result


# ----------------------------------------------------------------------------------------------
# Targets


class Target:
    def __init__(self, name, h1, h2, grpc, proc=None, traces_url=None):
        self.name, self.h1, self.h2, self.grpc, self.proc = name, h1, h2, grpc, proc
        self.traces_url = traces_url  # where this target's spans should be visible
        self.problem = None  # set when the target cannot serve; it is then skipped


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_targets(args, workdir):
    """Starts the backend, nginx, haproxy and the stitch instances; returns the targets."""
    sut, gen = args.sut_cpus, args.gen_cpus
    backend_port = free_port()
    backend = start("backend", [os.path.join(args.bin_dir, "examples", "bench_backend"),
                                f"127.0.0.1:{backend_port}"], workdir, cpus=sut)
    Probe.backend_pid = backend.pid
    Probe.sut_cpus = parse_cpus(sut)
    targets = [Target("direct", backend_port, backend_port, backend_port)]

    ports = {"DIR": workdir, "BACKEND": backend_port,
             "H1": free_port(), "H2": free_port(), "GRPC": free_port()}
    conf = fill_template("nginx.conf", workdir, ports)
    nginx = start("nginx", ["nginx", "-p", workdir, "-c", conf, "-e",
                            os.path.join(workdir, "nginx-error.log")], workdir, cpus=sut)
    targets.append(Target("nginx", ports["H1"], ports["H2"], ports["GRPC"], nginx))

    ports = {"DIR": workdir, "BACKEND": backend_port, "H1": free_port(), "H2": free_port()}
    conf = fill_template("haproxy.cfg", workdir, ports)
    haproxy = start("haproxy", ["haproxy", "-db", "-f", conf], workdir, cpus=sut)
    targets.append(Target("haproxy", ports["H1"], ports["H2"], ports["H2"], haproxy))

    stitch = os.path.join(args.bin_dir, "stitch")

    def stitch_cmd(inbound, admin_port, extra=()):
        return [stitch, "run", "--inbound-listen", f"127.0.0.1:{inbound}",
                "--inbound-target", f"127.0.0.1:{backend_port}",
                "--admin-listen", f"127.0.0.1:{admin_port}",
                "--outbound-listen", f"127.0.0.1:{free_port()}", *extra]

    # The OTLP receiver is another stitch's admin server; it runs beside the load generators
    # so receiving spans does not take CPU from the proxy under test.
    collector_admin = free_port()
    start("stitch-collector", stitch_cmd(free_port(), collector_admin), workdir, env=clean_env(),
          cpus=gen)
    variants = [
        ("stitch (trace off)", ["--config", os.path.join(HERE, "rules-trace-off.yaml")], {}),
        ("stitch (ring)", [], {}),
        ("stitch (OTLP)", [], {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_admin}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}),
    ]
    for name, extra, env in variants:
        inbound, admin = free_port(), free_port()
        proc = start(name.replace(" ", "").replace("(", "-").replace(")", ""),
                     stitch_cmd(inbound, admin, extra), workdir, env=clean_env(**env), cpus=sut)
        traces = collector_admin if "OTLP" in name else admin
        targets.append(Target(name, inbound, inbound, inbound, proc,
                              f"http://127.0.0.1:{traces}/traces"))
    return targets


def tracing_evidence(targets):
    """What each stitch's trace store shows after the run, so the report says plainly whether
    the 'ring' and 'OTLP' rows really carried spans."""
    evidence = {}
    for target in targets:
        if not target.traces_url or target.problem:
            continue
        try:
            with urllib.request.urlopen(target.traces_url, timeout=3) as resp:
                body = resp.read()
            evidence[target.name] = f"GET /traces → {resp.status}, {len(body):,} bytes"
        except urllib.error.HTTPError as e:
            evidence[target.name] = f"GET /traces → {e.code} (no spans visible)"
        except OSError as e:
            evidence[target.name] = f"GET /traces failed: {e}"
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
                with urllib.request.urlopen(url, timeout=2) as resp:
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
        print(f"  {target.name:20} {'OK' if not target.problem else 'SKIPPED: ' + target.problem}",
              flush=True)


# ----------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of figures for one target in one round.


def w_h1(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_cpu = run_generator(
        ["wrk", "-t", "1", "-c", "50", "-d", f"{args.seconds}s", f"http://127.0.0.1:{target.h1}/"],
        args.seconds + 15, args.gen_cpus)
    requests = int(re.search(r"(\d+) requests in", out).group(1)) if rc == 0 else 0
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1)) if requests else 1
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    result = {"rps": requests / seconds, "errors": errors / max(requests, 1),
              "gen_cpu_share": gen_cpu / seconds}
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
    spawned = [spawn_generator(oha_cmd(args, target.h1), args.gen_cpus),
               spawn_generator(oha_cmd(args, direct.h1), args.gen_cpus)]
    (rc_p, out_p, cpu_p), (rc_d, out_d, cpu_d) = wait_generators(spawned, args.seconds + 20)
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
        "gen_cpu_share": (cpu_p + cpu_d) / args.seconds,
    }
    return probe.finish(result, proxied["rps"] * args.seconds)


def w_h2(args, target, _direct):
    probe = Probe(target)
    rc, out, gen_cpu = run_generator(
        ["h2load", "-t", "1", "-c", "4", "-m", "64", "-D", str(args.seconds),
         "--warm-up-time", "300ms", f"http://127.0.0.1:{target.h2}/"],
        args.seconds + 15, args.gen_cpus)
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    ok = int(done.group(1)) if done else 0
    failed = int(done.group(2)) + int(done.group(3)) if done else 1
    result = {"rps": ok / args.seconds, "errors": failed / max(ok + failed, 1),
              "gen_cpu_share": gen_cpu / args.seconds}
    return probe.finish(result, ok)


def grpc_workload(mode):
    def run(args, target, _direct):
        probe = Probe(target)
        seconds = max(1, args.seconds - 1)
        rc, out, gen_cpu = run_generator(
            [os.path.join(args.bin_dir, "examples", "bench_grpc_load"),
             f"http://127.0.0.1:{target.grpc}", mode, str(seconds), "32", "2"],
            seconds + 15, args.gen_cpus)
        if rc != 0 or "{" not in out:
            raise RuntimeError(f"bench_grpc_load failed: {out[-300:]}")
        data = json.loads(out[out.index("{"):])
        result = {"rps": data["rps"], "p99": data["p99_us"],
                  "errors": data["errors"] / max(data["requests"] + data["errors"], 1),
                  "gen_cpu_share": gen_cpu / seconds}
        return probe.finish(result, data["requests"])
    return run


def w_body(args, target, _direct, upload_file):
    base = f"http://127.0.0.1:{target.h1}"
    probe = Probe(target)
    fmt = "%{http_code} %{size_download} %{size_upload} %{time_total}"
    curl = ["curl", "-s", "-o", "/dev/null", "--max-time", "60", "-H", "Expect:", "-w", fmt]
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
        "memory": f"{mem_gib:.1f} GiB", "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
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
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--command", default="make bench", help="recorded in the report")
    args = parser.parse_args()

    NICENESS[0] = args.nice if os.geteuid() == 0 else 0
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(stop_all)
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
        targets = start_targets(args, workdir)
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
               "rate": args.rate, "gen_cpus": args.gen_cpus, "sut_cpus": args.sut_cpus, "nice": NICENESS[0],
               "command": args.command, "duration_s": round(time.time() - began),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "skipped": {t.name: t.problem for t in targets if t.problem},
               "tracing": tracing_evidence(targets),
               "results": results}
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(run, f, indent=1)
        write_report(run, args.out)
        print(f"wrote {args.out} (raw figures: {workdir}/results.json)", flush=True)
    finally:
        stop_all()
        os.remove(upload_file)


if __name__ == "__main__":
    main()
