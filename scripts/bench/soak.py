#!/usr/bin/env python3
"""The measuring half of `make soak` (soak.sh builds first): one stitch under a steady mix of
traffic for a long time, while its rules are reloaded and its collector goes away and comes
back, and whether it stays healthy.

Processes (all on loopback, all killed when this script ends):
  soak backend   every protocol of the mix on one port; counts the traceparent stitch wrote
                 on each request (examples/soak/backend.rs)
  OTLP sink      bench_otlp_sink --count-spans: prints the spans of every export it accepts
  stitch         explicit mode to the backend, exporting OTLP/HTTP to the sink, rules file
                 watched
  soak load      the mix (examples/soak/load.rs): HTTP/1 keep-alive and new connections,
                 malformed trace headers, absolute-form through the outbound listener, h2c,
                 gRPC unary and streaming, WebSocket, opaque TCP, 8 MiB bodies both ways

Meanwhile, every 10 s the rules file is replaced (every sixth version is invalid and must be
rejected), and every minute the collector is stopped for 20 s (from second 30 to 50). Every
SAMPLE seconds stitch's RSS, open file descriptors and CPU are read from /proc.

At the end the load stops, the collector is up, and once stitch's export queue is empty the
report checks: no failed request; RSS and file descriptors flat after the warm-up (the
least-squares slope over the run after warm-up, as a drift over that window, against the
scatter around the line); no panic and stitch still running; every span stitch sampled (what
the backend saw) exported or counted as dropped, and every exported span received.
"""

import argparse
import atexit
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import procs  # noqa: E402
import report  # noqa: E402

LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
RULES = [
    "extract: [w3c, b3, jaeger]\ninject: [w3c]\n",
    "extract: [w3c, b3, jaeger]\ninject: [w3c, b3]\nrepair: lenient\n",
    "extract: [w3c, b3]\ninject: [w3c, jaeger]\nsampling: { root_ratio: 1.0 }\n",
]
INVALID_RULES = "inject: [zipkin]\n"
MARK_BEGIN, MARK_END = report.SOAK_MARKS


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=3):
    with LOOPBACK.open(url, timeout=timeout) as resp:
        return resp.read().decode(errors="replace")


def metrics(admin):
    """stitch's counters: {name: total} and {name{labels}: value}."""
    totals, series = {}, {}
    for line in get(f"{admin}/metrics").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{", 1)[0]
        totals[name] = totals.get(name, 0) + float(value)
        series[key] = float(value)
    return totals, series


def proc_sample(pid):
    """(RSS MiB, open fds, CPU s, VmData MiB): VmData is the heap and anonymous mappings the
    process asked for, so it shows growth that RSS hides while pages are reused."""
    rss = procs.current_rss_mib([pid])
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    return rss, fds, procs.cpu_seconds([pid]), procs.status_mib([pid], "VmData")


def write_rules(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # as an editor or a ConfigMap swap: the watcher sees a rename


def fit(points):
    """Least-squares line through (t, y): (slope per second, sd of the residuals)."""
    if len(points) < 3:
        return 0.0, 0.0
    ts = [p[0] for p in points]
    ys = [p[1] for p in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0
    residuals = [y - (my + slope * (t - mt)) for t, y in points]
    return slope, statistics.pstdev(residuals)


def flatness(points, floor):
    """(drift over the window, residual sd, flat?): flat when the drift the slope implies over
    the window is within three residual sds, or below `floor` (the unit's noise); `None`
    when the run is too short to have three readings after warm-up."""
    if len(points) < 3:
        return 0.0, 0.0, None
    slope, sd = fit(points)
    window = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
    drift = slope * window
    return drift, sd, abs(drift) <= max(3 * sd, floor)


class Collector:
    """The OTLP sink, stopped and started again on the same port."""

    def __init__(self, bin_dir, workdir, port):
        self.cmd = [os.path.join(bin_dir, "examples", "bench_otlp_sink"),
                    f"127.0.0.1:{port}", "--count-spans"]
        self.workdir, self.proc, self.incarnation, self.logs = workdir, None, 0, []

    def start(self):
        self.incarnation += 1
        name = f"otlp-sink-{self.incarnation}"
        self.proc = procs.start(name, self.cmd, self.workdir)
        self.logs.append(os.path.join(self.workdir, f"{name}.log"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a crash, not a goodbye
            self.proc.wait(timeout=5)
        self.proc = None

    def up(self):
        return self.proc is not None

    def spans(self):
        total = 0
        for log in self.logs:
            with open(log) as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("spans "))
        return total


def read_lines(stream, sink):
    for line in stream:
        sink.append(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="where stitch and examples/ are")
    parser.add_argument("--seconds", type=int, default=1500)
    parser.add_argument("--rate-scale", type=float, default=1.0, help="scales every rate")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between readings")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out of the slopes (default: 40%%, at least 30)")
    parser.add_argument("--out", default="BENCHMARKS.md", help="report section goes here")
    parser.add_argument("--command", default="make soak", help="recorded in the report")
    parser.add_argument("--build", default="release", help="which build ran (for the report)")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(30.0, 0.4 * args.seconds)

    signal.signal(signal.SIGTERM, procs.on_signal)
    signal.signal(signal.SIGINT, procs.on_signal)
    atexit.register(procs.stop_all)
    workdir = tempfile.mkdtemp(prefix="stitch-soak-")
    print(f"stitch soak: {args.seconds} s, logs in {workdir}", flush=True)

    backend_port, sink_port = free_port(), free_port()
    inbound, outbound, admin_port = free_port(), free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    soak = os.path.join(args.bin_dir, "examples", "soak")
    procs.start("backend", [soak, "backend", f"127.0.0.1:{backend_port}"], workdir)
    collector = Collector(args.bin_dir, workdir, sink_port)
    collector.start()
    rules = os.path.join(workdir, "rules.yaml")
    write_rules(rules, RULES[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STITCH_"))}
    env.update(RUST_LOG="info", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
               OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    stitch = procs.start("stitch", [
        os.path.join(args.bin_dir, "stitch"), "run", "--log-format", "json",
        "--inbound-listen", f"127.0.0.1:{inbound}", "--inbound-target",
        f"127.0.0.1:{backend_port}", "--outbound-listen", f"127.0.0.1:{outbound}",
        "--admin-listen", f"127.0.0.1:{admin_port}", "--config", rules], workdir, env=env)
    deadline = time.time() + 30
    while True:
        try:
            if get(f"{admin}/ready").startswith("ready"):
                break
        except OSError:
            pass
        if time.time() > deadline or stitch.poll() is not None:
            raise SystemExit(f"stitch did not get ready; see {workdir}/stitch.log")
        time.sleep(0.2)

    load = subprocess.Popen(
        [soak, "load", f"127.0.0.1:{inbound}", f"127.0.0.1:{outbound}",
         f"127.0.0.1:{backend_port}", str(args.seconds), str(args.rate_scale)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    procs.STARTED.append(load)
    reports = []
    threading.Thread(target=read_lines, args=(load.stdout, reports), daemon=True).start()

    began = time.time()
    samples, events = [], []
    reloads = 0
    next_sample, next_reload = began, began + 10
    while load.poll() is None:
        now = time.time()
        t = now - began
        if now >= next_sample and t <= args.seconds:
            rss, fds, cpu, data = proc_sample(stitch.pid)
            samples.append({"t": round(t, 1), "rss_mib": rss, "fds": fds, "cpu_s": cpu,
                            "data_mib": data})
            next_sample += args.sample
        if now >= next_reload and t < args.seconds:
            reloads += 1
            write_rules(rules, INVALID_RULES if reloads % 6 == 0 else RULES[reloads % 3])
            next_reload += 10
        minute_s = t % 60
        if collector.up() and 30 <= minute_s < 50 and t < args.seconds - 20:
            collector.stop()
            events.append((round(t), "collector down"))
        elif not collector.up() and not 30 <= minute_s < 50:
            collector.start()
            events.append((round(t), "collector up"))
        if stitch.poll() is not None:
            break
        time.sleep(0.2)
    if not collector.up():
        collector.start()
        events.append((round(time.time() - began), "collector up"))
    load.wait(timeout=60)
    time.sleep(0.5)

    # Quiesce: wait until every span is accounted for at stitch (the queue drained to 0 and
    # exported + dropped stable); export retries back off, so allow time.
    alive = stitch.poll() is None
    settled = None
    for _ in range(120):
        if not alive:
            break
        totals, _ = metrics(admin)
        figure = (totals.get("stitch_span_queue_length", 0),
                  totals.get("stitch_spans_exported_total", 0),
                  totals.get("stitch_spans_dropped_total", 0))
        if figure[0] == 0 and figure == settled:
            break
        settled = figure
        time.sleep(1)
    final = {"kinds": {}}
    for line in reversed(reports):
        try:
            final = json.loads(line)
            break
        except ValueError:
            continue
    totals, series = metrics(admin) if alive else ({}, {})
    backend = json.loads(get(f"http://127.0.0.1:{backend_port}/soak-stats"))
    after = proc_sample(stitch.pid) if alive else (None, None, None, None)
    with open(os.path.join(workdir, "stitch.log"), errors="replace") as f:
        log = f.read()
    panics = len(re.findall(r"panicked", log))
    run = {"seconds": args.seconds, "rate_scale": args.rate_scale, "warmup": warmup,
           "build": args.build,
           "samples": samples, "events": events, "load": final, "totals": totals,
           "series": {k: v for k, v in series.items()
                      if k.startswith(("stitch_spans_dropped_total", "stitch_detect_total",
                                       "stitch_config_reloads_total"))},
           "backend": backend, "collector_spans": collector.spans(), "alive": alive,
           "panics": panics, "rules_written": reloads, "after": after,
           "duration_s": round(time.time() - began)}
    with open(os.path.join(workdir, "soak.json"), "w") as f:
        json.dump(run, f, indent=1)
    text = render(run, args.command)
    print(text, flush=True)
    write_section(args.out, text)
    print(f"wrote the soak section of {args.out} (raw figures: {workdir}/soak.json)")
    procs.stop_all()


def render(run, command):
    """The BENCHMARKS.md section for `run` (named apart from the `report` module it is written
    with)."""
    kinds = run["load"].get("kinds", {})
    ok = sum(k["ok"] for k in kinds.values())
    failed = sum(k["failed"] for k in kinds.values())
    after_warmup = [s for s in run["samples"] if s["t"] >= run["warmup"]]
    rss = [(s["t"], s["rss_mib"]) for s in after_warmup]
    fds = [(s["t"], s["fds"]) for s in after_warmup if s["fds"] is not None]
    rss_drift, rss_sd, rss_flat = flatness(rss, 1.0)
    fd_drift, fd_sd, fds_flat = flatness(fds, 2.0)
    t = run["totals"]
    exported = t.get("stitch_spans_exported_total", 0)
    dropped = t.get("stitch_spans_dropped_total", 0)
    queued = t.get("stitch_span_queue_length", 0)
    sampled = run["backend"]["sampled"]
    accounted = exported + dropped + queued
    checks = [
        ("0 failed requests", failed == 0, f"{ok:,} answered right, {failed:,} failed"),
        ("RSS flat after warm-up", rss_flat,
         f"drift {rss_drift:+.2f} MiB over the window (scatter sd {rss_sd:.2f} MiB)"),
        ("open file descriptors flat after warm-up", fds_flat,
         f"drift {fd_drift:+.1f} (scatter sd {fd_sd:.1f})"),
        ("no panic, still running", run["alive"] and run["panics"] == 0,
         f"{'running' if run['alive'] else 'EXITED'}, {run['panics']} panic lines in its log"),
        ("every sampled span exported or counted as dropped", accounted == sampled,
         f"{sampled:,.0f} sampled (seen by the backend) = {exported:,.0f} exported + "
         f"{dropped:,.0f} dropped + {queued:,.0f} queued"),
        ("every exported span received", run["collector_spans"] >= exported,
         f"{run['collector_spans']:,} received by the collector"),
        ("stitch rewrote every parent", run["backend"]["not_rewritten"] == 0
         and run["backend"]["missing"] == 0,
         f"{run['backend']['not_rewritten']} kept the client's span id, "
         f"{run['backend']['missing']} without traceparent "
         f"({run['backend']['unsampled']:,} unsampled: new roots while export was degraded)"),
    ]
    lines = [MARK_BEGIN, "## Soak", "",
             f"Produced by `{command}` ({run['build']} build): {run['duration_s']} s of mixed "
             f"traffic through one stitch (rate scale {run['rate_scale']:g}), rules replaced "
             "every 10 s "
             f"({run['rules_written']} times, every sixth invalid), the collector down 20 s of "
             "every minute. Method and what each check means: `scripts/bench/soak.py`; the "
             "mix: `examples/soak/load.rs`.", "",
             "| check | verdict | figure |", "|---|---|---|"]
    verdicts = {True: "**met**", False: "**not met**", None: "not measured (run too short)"}
    lines += [f"| {name} | {verdicts[good]} | {figure} |" for name, good, figure in checks]
    lines += ["", "| kind | ok | failed | first failures |", "|---|---|---|---|"]
    for kind, c in kinds.items():
        samples = "; ".join(c["samples"])[:200].replace("|", "\\|")
        lines.append(f"| {kind} | {c['ok']:,} | {c['failed']:,} | {samples} |")
    drops = {k: v for k, v in run["series"].items() if k.startswith("stitch_spans_dropped")
             and v > 0}
    reloads = {k: v for k, v in run["series"].items() if k.startswith("stitch_config_reloads")}
    lines += ["", f"Spans dropped by reason: {drops or 'none'}. Rules reloads: {reloads}. "
              f"Requests counted by stitch: {t.get('stitch_requests_total', 0):,.0f}.", "",
              "Over time (after warm-up at "
              f"{run['warmup']:.0f} s the slopes are fitted; {last_growth(run['samples'])}):",
              "", "| t s | RSS MiB | VmData MiB | open fds | CPU s |", "|---|---|---|---|---|"]
    step = max(1, len(run["samples"]) // 20)
    for s in run["samples"][::step]:
        lines.append(f"| {s['t']:.0f} | {s['rss_mib']:.1f} | {s.get('data_mib', 0):.1f} | "
                     f"{s['fds']} | {s['cpu_s']:.1f} |")
    lines += ["", MARK_END, ""]
    return "\n".join(lines)


def last_growth(samples):
    """From when VmData stays within 0.5 MiB of its peak: the working set (ring maps, pooled
    read buffers grown by 8 MiB bodies) is reached then, and the warm-up should end after it.
    (A running-peak test would miss a slow creep of small steps.)"""
    data = [(s["t"], s["data_mib"]) for s in samples if s.get("data_mib") is not None]
    if not data:
        return "VmData never read"
    peak = max(d for _, d in data)
    when = data[0][0]
    for t, d in data:
        if d < peak - 0.5:
            when = None
        elif when is None:
            when = t
    return f"VmData within 0.5 MiB of its peak ({peak:.1f} MiB) from {when:.0f} s"


def write_section(path, text):
    """Puts the soak section into `path`, replacing an earlier one (`make bench` keeps it)."""
    report.replace_section(path, report.SOAK_MARKS, text)


if __name__ == "__main__":
    main()
