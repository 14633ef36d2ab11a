"""The `memory-limit` workload of `make bench` (`BENCH_ARGS="--only memory-limit"`; also part
of a full run): stitch under a 64 MiB memory limit (the README's Kubernetes example) and a CPU
quota of one, in a cgroup of its own as a pod's container would be, while 10,000 HTTP/1.1
clients connect at the same moment (scripts/bench/flood_clients.py: each sends one request,
reads the answer and leaves).

Measured twice in the same run: stitch with its default flags — the connection cap derived
from the limit (`app::memory`), clients beyond it wait in the listen backlog — and stitch with
`--max-connections 10000`, the cap a memory limit would not bound, as the contrast. Reports per
run: the cap `/config` shows, what the clients got (ok / failed after writing their request /
refused / still waiting at the timeout), the cgroup's peak usage and OOM kills, and whether
stitch is still running.

Targets (issue 15): under the limit, 10,000 clients at once never push stitch over it (no OOM
kill, still running) and no request stitch accepted fails.
"""

import json
import os
import subprocess
import sys
import time

import procs
import report
import run

LIMIT_BYTES = 64 << 20
CLIENTS = 10_000
CLIENT_TIMEOUT_S = 120
MIB = 1 << 20


def measure(bin_dir, workdir, backend_port, label, extra):
    memory = procs.memory_cgroup(label, LIMIT_BYTES)
    target = run.start_stitch(label, os.path.join(bin_dir, "stitch"), workdir, backend_port,
                              procs.Placement(quota=1, memory=memory), extra=extra)
    run.check_targets([target])
    if target.problem:
        return {"label": label, "problem": target.problem}
    with run.LOOPBACK.open(f"{target.admin_url}/config", timeout=5) as resp:
        limits = json.load(resp).get("limits", {})
    out = subprocess.run(
        [sys.executable, "-B", os.path.join(run.HERE, "flood_clients.py"), str(target.h1),
         str(CLIENTS), str(CLIENT_TIMEOUT_S)],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S + 60)
    clients = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {
        "error": out.stderr[-300:]}
    time.sleep(1)
    alive = target.proc.poll() is None
    peak, kills = procs.memory_figures(*memory)
    counted = {}
    if alive:
        with run.LOOPBACK.open(f"{target.admin_url}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("stitch_requests_total{") and 'direction="inbound"' in line:
                    status = line.split('status_class="', 1)[1].split('"', 1)[0]
                    counted[status] = counted.get(status, 0) + float(line.rsplit(" ", 1)[1])
    try:
        os.killpg(target.proc.pid, 15)
        target.proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    return {"label": label, "limits": limits, "clients": clients, "alive": alive,
            "peak_bytes": peak, "oom_kills": kills, "cgroup": memory[1], "counted": counted}


def run_all(bin_dir, workdir):
    """Both runs, on one backend."""
    direct = run.start_backend(bin_dir, workdir, None)
    results = []
    for label, extra in (("stitch-default", []), ("stitch-cap-10000", ["--max-connections",
                                                                         "10000"])):
        print(f"  memory-limit: {label}", flush=True)
        results.append(measure(bin_dir, workdir, direct.h1, label, extra))
        print(f"    {json.dumps(results[-1])}", flush=True)
    return results


def verdicts(default):
    clients = default.get("clients", {})
    held = default.get("alive") and default.get("oom_kills") == 0
    peak = default.get("peak_bytes")
    peak_text = f"peak {peak / MIB:.1f} MiB of {LIMIT_BYTES / MIB:.0f}" if peak else "peak unknown"
    state = "running" if default.get("alive") else "EXITED"
    failed = clients.get("failed")
    return [
        (f"{CLIENTS:,} clients at once never push stitch over {LIMIT_BYTES // MIB} MiB", held,
         f"{default.get('oom_kills')} OOM kills, {state}, {peak_text}"),
        ("no request stitch accepted fails", failed == 0 and clients.get("ok") == CLIENTS,
         f"{clients.get('ok', 0):,} answered 200, {failed} failed, "
         f"{clients.get('refused')} refused, {clients.get('waiting')} still waiting"),
    ]


def counted_text(counted):
    """stitch's own inbound request counts by status class, the non-zero ones."""
    if not counted:
        return "(not running)"
    shown = {k: v for k, v in sorted(counted.items()) if v or k == "failed"}
    return ", ".join(f"{k} {v:,.0f}" for k, v in shown.items())


def section(results, command, date, commit):
    rows = []
    for r in results:
        c, lim = r.get("clients", {}), r.get("limits", {})
        peak = f"{r['peak_bytes'] / MIB:.1f}" if r.get("peak_bytes") else "?"
        rows.append(
            f"| {r['label']} | {lim.get('max_connections', '?')} ({lim.get('max_connections_reason', '?')}) "
            f"| {c.get('ok', '?')} | {c.get('failed', '?')} | {c.get('refused', '?')} "
            f"| {c.get('waiting', '?')} | {c.get('seconds', '?')} | {peak} | {r.get('oom_kills', '?')} "
            f"| {'yes' if r.get('alive') else 'no'} | {counted_text(r.get('counted'))} |")
    table = ["| check | verdict | figure |", "|---|---|---|"] + [
        f"| {name} | {'**met**' if ok else '**not met**'} | {figure} |"
        for name, ok, figure in verdicts(results[0])]
    return f"""{report.MEMLIMIT_MARKS[0]}
## Under a memory limit

Produced by `{command}` on {date} at commit `{commit}`. stitch in a cgroup of its own
({results[0].get('cgroup', '?')}) with `memory` limited to {LIMIT_BYTES // MIB} MiB and a CPU quota of one, in front of
the bench backend; {CLIENTS:,} HTTP/1.1 clients connect at the same moment, each sends one
request, reads the answer and leaves (`scripts/bench/flood_clients.py`, {CLIENT_TIMEOUT_S} s per client).
`failed` = the request was written and the connection then ended without a 200;
`refused` = no connection; `waiting` = no answer within the timeout. The second row is the
contrast: the same limit with the cap set by hand above what the memory holds. `stitch
counted` misses about `cap` requests, the first served: those clients write more than `--detect-timeout`
after connecting (the flood's own start-up), so stitch relays them opaque, answered but
untraced (ARCHITECTURE.md, detection's known limit).

{chr(10).join(table)}

| stitch | cap per direction (why) | ok | failed | refused | waiting | flood took s | cgroup peak MiB | OOM kills | running after | stitch counted (inbound, by status class) |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{report.MEMLIMIT_MARKS[1]}
"""


def write_section(path, text):
    """Replaces this workload's section of the report."""
    report.replace_section(path, report.MEMLIMIT_MARKS, text)
