"""Turns the figures of one `make bench` run into BENCHMARKS.md.

Every figure is the median over rounds with its [min–max] spread, and where it makes sense a
ratio to nginx (and to haproxy for h2c and gRPC) measured in the same run.
"""

import statistics
import subprocess

NGINX, HAPROXY = "nginx", "haproxy"
OFF, RING, OTLP = "stitch (trace off)", "stitch (ring)", "stitch (OTLP)"
STITCHES = (OFF, RING, OTLP)


def median(results, target, metric):
    values = results.get(target, {}).get(metric)
    return statistics.median(values) if values else None


def spread(values, fmt):
    if not values:
        return "—"
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" [{fmt(min(values))}–{fmt(max(values))}]"
    return text


def ratio(results, target, metric, reference):
    mine, theirs = median(results, target, metric), median(results, reference, metric)
    if mine is None or theirs is None or theirs <= 0 or mine < 0:
        return "—"
    return f"{mine / theirs:.2f}×"


def f_int(v):
    return f"{v:,.0f}"


def f_signed(v):
    return f"{v:+,.0f}"


def f_cpu(v):
    return f"{v:.3f}"


def f_mib(v):
    return f"{v:.1f}"


def f_pct(v):
    return f"{v * 100:.0f}%"


def table(run, title, note, columns, targets):
    """columns: (header, metric, formatter, [reference targets for ratio columns])."""
    results = run["results"]
    heads = ["target"]
    for head, _, _, refs in columns:
        heads.append(head)
        heads.extend(f"× {ref}" for ref in refs)
    lines = [f"### {title}", "", note, "", "| " + " | ".join(heads) + " |",
             "|" + "---|" * len(heads)]
    for target in targets:
        if target not in results:
            continue
        row = [target]
        for _, metric, fmt, refs in columns:
            row.append(spread(results[target].get(metric), fmt))
            row.extend(ratio(results, target, metric, ref) for ref in refs)
        workload = columns[0][1].split(".")[0]
        errors = median(results, target, f"{workload}.errors")
        failed = results[target].get(f"{workload}.failed")
        if errors and errors > 0.001:
            row[1] += f" ⚠ {errors * 100:.1f}% errors"
        if failed:
            row[1] += f" ⚠ failed in {len(failed)} round(s)"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


def targets_section(run):
    r = run["results"]

    def m(target, metric):
        return median(r, target, metric)

    def cmp(target, metric, reference, higher_is_better):
        mine, theirs = m(target, metric), m(reference, metric)
        if mine is None or theirs is None or theirs == 0:
            return None, "no figure"
        x = mine / theirs
        ok = x >= 1.0 if higher_is_better else x <= 1.0
        return ok, f"{x:.2f}× {reference} ({mine:,.3g} vs {theirs:,.3g})"

    def cost(target, metric, higher_is_better):
        mine, base = m(target, metric), m(OFF, metric)
        if mine is None or base is None or base == 0:
            return None, "no figure"
        change = (base - mine) / base if higher_is_better else (mine - base) / base
        figure = f"{change * 100:+.1f}% vs trace off ({mine:,.4g} vs {base:,.4g})"
        workload = metric.split(".")[0]
        cpu, cpu_off = m(target, f"{workload}.cpu"), m(OFF, f"{workload}.cpu")
        if cpu and cpu_off:
            # The steadier view of the same cost on a shared machine.
            figure += f"; CPU per request {(cpu - cpu_off) / cpu_off * 100:+.0f}%"
        return change < 0.10, figure

    def bound(target, metric, limit):
        value = m(target, metric)
        if value is None:
            return None, "no figure"
        return value <= limit, f"{value:.1f} MiB (limit {limit} MiB)"

    def with_capacity(check, workload):
        """Closed-loop req/s moves with whatever else runs on the machine; requests per proxy
        CPU-second (1 / CPU per request) does not, so the verdict shows it beside."""
        ok, figure = check
        reference = HAPROXY if workload != "h1" else NGINX
        mine, theirs = m(RING, f"{workload}.cpu"), m(reference, f"{workload}.cpu")
        if mine and theirs:
            figure += f"; per proxy CPU-second: {theirs / mine:.2f}× {reference}"
        return ok, figure

    checks = [
        ("HTTP/1.1 CPU per request ≤ 1.0× nginx (ring)", cmp(RING, "h1.cpu", NGINX, False)),
        ("HTTP/1.1 throughput ≥ 1.0× nginx (ring)",
         with_capacity(cmp(RING, "h1.rps", NGINX, True), "h1")),
        ("HTTP/1.1 p99 added latency at the fixed rate ≤ 1.0× nginx (ring)",
         cmp(RING, "latency.added_p99", NGINX, False)),
        ("h2c throughput ≥ 1.0× haproxy (ring)",
         with_capacity(cmp(RING, "h2.rps", HAPROXY, True), "h2")),
        ("gRPC unary throughput ≥ 1.0× haproxy (ring)",
         with_capacity(cmp(RING, "grpc_unary.rps", HAPROXY, True), "grpc_unary")),
        ("gRPC streaming throughput ≥ 1.0× haproxy (ring)",
         with_capacity(cmp(RING, "grpc_stream.rps", HAPROXY, True), "grpc_stream")),
        ("tracing to the ring costs < 10% of HTTP/1.1 throughput", cost(RING, "h1.rps", True)),
        ("tracing to the ring costs < 10% of p99", cost(RING, "latency.p99", False)),
        ("tracing to OTLP costs < 10% of HTTP/1.1 throughput", cost(OTLP, "h1.rps", True)),
        ("tracing to OTLP costs < 10% of p99", cost(OTLP, "latency.p99", False)),
    ]
    for name in STITCHES:
        checks.append((f"peak RSS ≤ 20 MiB at the fixed rate ({name})",
                       bound(name, "latency.rss_mib", 20)))
    for name in STITCHES:
        checks.append((f"1 GiB body leaves peak RSS < 32 MiB ({name})",
                       bound(name, "body.rss_mib", 32)))
    lines = ["## Issue 6 targets (from this run)", "",
             "| target | verdict | figure |", "|---|---|---|"]
    for name, (ok, figure) in checks:
        lines.append(f"| {name} | {verdict(ok)} | {figure} |")
    return "\n".join(lines) + "\n"


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_report(run, path):
    mc = run["machine"]
    order = ["direct", NGINX, HAPROXY, OFF, RING, OTLP]
    proxies = order[1:]
    rate = run["rate"]
    header = f"""# Benchmarks

Produced by `{run['command']}` on {run['date']} at commit `{git_commit()}`
({run['rounds']} rounds, {run['seconds']} s per measurement, {run['duration_s']} s of
measuring). Regenerate with `make bench`; method in `scripts/bench/run.py`; profile one workload
with `scripts/bench/profile.sh h1|h2|grpc off|ring|otlp`; compare builds with
`scripts/bench/ab.py` (`--floor` adds a bare hyper proxy as the libraries' floor).

**Machine**: {mc['nproc']} CPUs ({mc['cpu']}), {mc['memory']}, Linux {mc['kernel']}; load
average at start {' '.join(mc['loadavg_at_start'])} (the VM is shared: closed-loop req/s can
swing ±40% between rounds, CPU per request is the steadiest figure).
**Pinning**: load generators on CPU {run['gen_cpus']}; backend and proxy under test on CPU
{run['sut_cpus']}; all of them at `nice {run.get('nice', 0)}` so other work on the machine
yields those cores; each proxy runs one worker (nginx `worker_processes 1`, haproxy `nbthread 1`,
stitch's tokio runtime sized by its CPU affinity).
**Tools**: {mc['nginx']}; {mc['haproxy']}; {mc['wrk']}; {mc['h2load']}; {mc['oha']}.

Each cell: median over rounds [min–max]. `× nginx` / `× haproxy`: ratio of medians to that
proxy in this same run (for CPU, latency and RSS lower is better; for throughput higher is).
CPU is the proxy's utime+stime from `/proc/PID/stat` (all its processes) per 10,000 requests;
peak RSS is `VmHWM` summed over the proxy's processes, reset at the start of each workload.
"""
    skipped = run.get("skipped") or {}
    if skipped:
        header += "\n**Skipped targets**: " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()) + "\n"

    tracing = run.get("tracing") or {}
    if tracing:
        header += ("\n**Tracing evidence** (each stitch's `/traces` and span counters in "
                   "`/metrics` after the run): ") + \
            "; ".join(f"{name}: {what}" for name, what in tracing.items()) + "\n"

    parts = [header, "## Results", ""]
    parts.append(table(run, "HTTP/1.1, closed loop (wrk, 1 thread, 50 connections)",
                       "`proxy core` / `backend core`: share of CPU "
                       f"{run['sut_cpus']} each used (together near 100% means that core bounds "
                       "req/s); `other load on core`: CPU time other processes (and the "
                       "hypervisor) took on that core meanwhile; `generator CPU`: wrk's share of "
                       "its own core (near 100% means wrk "
                       "bounds req/s).",
                       [("req/s", "h1.rps", f_int, [NGINX]),
                        ("CPU s / 10k req", "h1.cpu", f_cpu, [NGINX]),
                        ("peak RSS MiB", "h1.rss_mib", f_mib, [NGINX]),
                        ("proxy core", "h1.proxy_core", f_pct, []),
                        ("backend core", "h1.backend_core", f_pct, []),
                        ("other load on core", "h1.other_core", f_pct, []),
                        ("generator CPU", "h1.gen_cpu_share", f_pct, [])], order))
    parts.append(table(run, f"HTTP/1.1 latency at {rate} req/s, paired (oha, open loop, "
                       "latency-corrected)",
                       "added = proxy percentile − percentile of a second oha driving the "
                       f"backend directly at {rate} req/s in the same window (µs)"
                       + (f"; proxy, backend and both oha run SCHED_FIFO {run['realtime']} "
                          "(chrt) during this workload so other load's scheduling delay does "
                          "not drown the proxy's." if run.get("realtime") else "."),
                       [("added p50 µs", "latency.added_p50", f_signed, [NGINX]),
                        ("added p99 µs", "latency.added_p99", f_signed, [NGINX]),
                        ("added p99.9 µs", "latency.added_p999", f_signed, [NGINX]),
                        ("p99 µs", "latency.p99", f_int, []),
                        ("CPU s / 10k req", "latency.cpu", f_cpu, [NGINX]),
                        ("peak RSS MiB", "latency.rss_mib", f_mib, [NGINX])], proxies))
    parts.append(table(run, "h2c, many streams (h2load, 4 connections × 64 streams)",
                       "nginx forwards h2c to the backend over its HTTP/1.1 keep-alive pool; "
                       "haproxy and stitch keep HTTP/2 end to end.",
                       [("req/s", "h2.rps", f_int, [NGINX, HAPROXY]),
                        ("CPU s / 10k req", "h2.cpu", f_cpu, [NGINX, HAPROXY]),
                        ("peak RSS MiB", "h2.rss_mib", f_mib, [NGINX, HAPROXY]),
                        ("proxy core", "h2.proxy_core", f_pct, []),
                        ("generator CPU", "h2.gen_cpu_share", f_pct, [])], order))
    parts.append(table(run, "gRPC unary (tonic client, 2 connections, 32 concurrent calls)",
                       "nginx uses `grpc_pass` with a keep-alive pool.",
                       [("req/s", "grpc_unary.rps", f_int, [NGINX, HAPROXY]),
                        ("p99 µs", "grpc_unary.p99", f_int, [HAPROXY]),
                        ("CPU s / 10k req", "grpc_unary.cpu", f_cpu, [NGINX, HAPROXY]),
                        ("proxy core", "grpc_unary.proxy_core", f_pct, []),
                        ("generator CPU", "grpc_unary.gen_cpu_share", f_pct, [])], order))
    parts.append(table(run, "gRPC bidirectional streaming (32 streams, ping-pong messages)",
                       "req/s here is messages echoed per second.",
                       [("msg/s", "grpc_stream.rps", f_int, [NGINX, HAPROXY]),
                        ("p99 µs", "grpc_stream.p99", f_int, [HAPROXY]),
                        ("CPU s / 10k msg", "grpc_stream.cpu", f_cpu, [NGINX, HAPROXY]),
                        ("proxy core", "grpc_stream.proxy_core", f_pct, []),
                        ("generator CPU", "grpc_stream.gen_cpu_share", f_pct, [])], order))
    parts.append(table(run, "1 GiB streamed body (curl, HTTP/1.1)",
                       "Download = backend streams 1 GiB to the client; upload = client PUTs "
                       "1 GiB that the backend drains. CPU is seconds per GiB moved.",
                       [("download MB/s", "body.down_mbps", f_int, [NGINX]),
                        ("upload MB/s", "body.up_mbps", f_int, [NGINX]),
                        ("peak RSS MiB", "body.rss_mib", f_mib, [NGINX]),
                        ("CPU s / GiB", "body.cpu", f_cpu, [NGINX])], order))
    parts.append(targets_section(run))
    with open(path, "w") as f:
        f.write("\n".join(parts))
