#!/usr/bin/env python3
"""A/B comparison of stitch builds on one workload, for hot-path work between `make bench` runs.

    scripts/bench/ab.py --mode ring --workload h1 A=/path/to/old/stitch B=target/release/stitch

Starts the bench backend, nginx (as the fixed reference) and one stitch per build given, all
placed as one of `make bench`'s shapes (`--shape`, default pinned: generator on CPU 0, backend
and proxies on CPU 1; `limit1`: each proxy under a one-CPU quota; `unlimited`), then runs the
workload against each in turn, rotating the order every round. Prints, per build, the median
and spread of requests/s and of CPU seconds per 10k requests (the steadiest figure here) and
the ratio to nginx from the same run. `--workload latency` runs `make bench`'s paired
fixed-rate latency measurement instead (oha's added percentiles and the per-request wire
figures of wire.py); `--keep-latency-db DIR` keeps each window's per-request records, to see
when the slow requests happened.
"""

import argparse
import atexit
import os
import signal
import statistics
import sys
import tempfile

sys.dont_write_bytecode = True
import procs  # noqa: E402
import run  # noqa: E402
from procs import start  # noqa: E402

WORKLOADS = {"h1": run.w_h1, "h2": run.w_h2, "grpc": run.grpc_workload("unary"),
             "stream": run.grpc_workload("stream"), "many": run.w_many, "idle": run.w_idle,
             "latency": run.w_latency}
MODES = {"off": (["--config", os.path.join(run.HERE, "rules-trace-off.yaml")], {}),
         "ring": ([], {}), "otlp": ([], None)}


# What a workload may report, and how it is printed (rps/cpu/p99 for the request workloads;
# the many-connections ones add timeouts, latency sd and memory per connection).
KEYS = {"rps": "{:,.0f}", "cpu": "{:.4f}", "p99": "{:,.0f}", "timeouts": "{:,.0f}",
        "lat_sd": "{:,.1f}", "lat_p99": "{:,.1f}", "kib_per_conn": "{:.2f}",
        "added_p99": "{:+,.0f}", "added_p999": "{:+,.0f}", "wire_added_p99": "{:+,.0f}",
        "wire_added_p999": "{:+,.0f}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="LABEL=PATH of a stitch binary")
    parser.add_argument("--bin-dir", default="target/release",
                        help="where examples/bench_backend and bench_grpc_load are")
    parser.add_argument("--mode", choices=MODES, default="ring")
    parser.add_argument("--workload", choices=WORKLOADS, default="h1")
    parser.add_argument("--floor", action="store_true",
                        help="also measure examples/bench_hyper_floor (a bare hyper proxy, h1 only)")
    parser.add_argument("--floor-timer", action="store_true",
                        help="also measure the floor with hyper's header_read_timeout armed")
    parser.add_argument("--floor-case", action="store_true",
                        help="also measure the floor with the timer and header-case preservation")
    parser.add_argument("--haproxy", action="store_true", help="also measure haproxy")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--gen-cpus", default="0")
    parser.add_argument("--sut-cpus", default="1")
    parser.add_argument("--shape", default="pinned", choices=("pinned", "limit1", "unlimited"))
    parser.add_argument("--rate", type=int, default=2000, help="latency: open-loop rate, req/s")
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument("--latency-warmup", type=float, default=1.0)
    parser.add_argument("--realtime", type=int, default=10,
                        help="latency, pinned shape: SCHED_FIFO priority (0 = off; root only)")
    parser.add_argument("--no-wire", dest="wire", action="store_false",
                        help="latency: do not also time requests on the wire (tcpdump on lo)")
    parser.add_argument("--keep-latency-db", metavar="DIR",
                        help="latency: keep each window's per-request sqlite files in DIR")
    args = parser.parse_args()
    args.shapes = args.shape
    shape = run.shapes(args)[0]
    args.shape, args.gen = shape, shape.gen
    procs.REALTIME_PRIORITY[0] = args.realtime if os.geteuid() == 0 else 0
    run.KEEP_LATENCY_DB[0] = args.keep_latency_db
    args.bin_dir = os.path.abspath(args.bin_dir)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, procs.on_signal)
    atexit.register(procs.stop_all)

    workdir = tempfile.mkdtemp(prefix="stitch-ab-")
    sut = shape.proxy
    direct = run.start_backend(args.bin_dir, workdir, shape.backend)
    backend_port = direct.h1
    targets = [run.start_nginx(workdir, backend_port, sut, shape.workers)]
    if args.haproxy:
        targets.append(run.start_haproxy(workdir, backend_port, sut, shape.workers))

    floors = [("hyper-floor", {})] if args.floor else []
    if args.floor_timer:
        floors.append(("floor+timer", {"FLOOR_HEADER_TIMEOUT": "1"}))
    if args.floor_case:
        floors.append(("floor+case", {"FLOOR_HEADER_TIMEOUT": "1", "FLOOR_PRESERVE_CASE": "1"}))
    for name, env in floors:
        port = run.free_port()
        floor = start(name, [os.path.join(args.bin_dir, "examples", "bench_hyper_floor"),
                             f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"],
                      workdir, env=run.clean_env(**env), cpus=sut)
        targets.append(run.Target(name, port, port, port, floor))

    extra, env = MODES[args.mode]
    if env is None:
        env = run.otlp_env(run.start_otlp_sink(args.bin_dir, workdir, shape.gen))
    for build in args.builds:
        label, path = build.split("=", 1)
        targets.append(run.start_stitch(label, os.path.abspath(path), workdir, backend_port,
                                        sut, extra, env))
    run.check_targets(targets)

    results = {t.name: [] for t in targets}
    for r in range(args.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for target in order:
            if not target.problem:
                results[target.name].append(WORKLOADS[args.workload](args, target, direct))
    print(f"\n{args.workload}, {args.mode}, {args.rounds} rounds × {args.seconds} s "
          f"(median [min–max])")
    ref = {k: statistics.median(r[k] for r in results["nginx"])
           for k in KEYS if all(k in r for r in results["nginx"])}
    for name, rows in results.items():
        if not rows:
            continue
        line = f"  {name:11}"
        for key, fmt in KEYS.items():
            values = [r[key] for r in rows if key in r]
            if not values or key not in ref:
                continue
            med = statistics.median(values)
            line += (f"  {key} {fmt.format(med)} [{fmt.format(min(values))}–"
                     f"{fmt.format(max(values))}] " +
                     (f"{med / ref[key]:.2f}× nginx" if ref[key] else "(nginx 0)"))
        print(line)


    # Spans a build dropped would make its tracing look cheaper than it is.
    evidence = run.tracing_evidence(targets, None)
    print("  " + run.describe_evidence(evidence))


if __name__ == "__main__":
    main()
