"""Process control and /proc readings for `make bench`: start pinned processes, kill all of
them at exit, run load generators with a time bound, and read CPU time and peak RSS."""

import os
import signal
import subprocess
import tempfile
import time

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


# SCHED_FIFO priority for the fixed-rate latency workload (0 = off). At 2000 req/s the
# processes are mostly idle, so this cannot starve the machine; what it buys is a wakeup that
# preempts other work at once, so milliseconds of scheduler delay do not hide the
# proxy's tens of microseconds.
REALTIME_PRIORITY = [0]


def pinned(cmd, cpus, realtime=False):
    """cmd under taskset (cpus: a CPU list, or None to leave it free), nice and chrt as set."""
    prefix = ["taskset", "-c", cpus] if cpus is not None else []
    if NICENESS[0] != 0:
        prefix = ["nice", "-n", str(NICENESS[0])] + prefix
    if realtime and REALTIME_PRIORITY[0]:
        prefix = ["chrt", "-f", str(REALTIME_PRIORITY[0])] + prefix
    return prefix + cmd


# ----------------------------------------------------------------------------------------------
# CPU quotas: what a pod's `resources.limits.cpu` is (a CFS quota on the container's cgroup, not
# an affinity mask). Each limited process gets a cgroup of its own, so a proxy and its children
# (nginx's workers) share one quota, like the containers of a pod.

CGROUPS = []
CGROUP_V1 = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"


def quota_support():
    """'v1', 'v2' or None: how this machine can limit a process to a CPU quota (root only)."""
    if os.geteuid() != 0:
        return None
    if os.path.exists(os.path.join(CGROUP_V1, "cpu.cfs_quota_us")):
        return "v1"
    try:
        with open(os.path.join(CGROUP_V2, "cgroup.controllers")) as f:
            if "cpu" in f.read().split():
                return "v2"
    except OSError:
        pass
    return None


def make_cgroup(hierarchy, name, files, v2_controller=None):
    """Creates the cgroup `stitch-bench-PID-name` under `hierarchy` with `files` written
    ({file: value}); with `v2_controller`, first enables that controller for the children of
    the v2 root. Removed by stop_all. Returns its directory."""
    if v2_controller is not None:
        try:
            with open(os.path.join(hierarchy, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{v2_controller}")
        except OSError:
            pass  # already enabled, or the kernel says why at the next write
    path = os.path.join(hierarchy, f"stitch-bench-{os.getpid()}-{name}")
    os.makedirs(path, exist_ok=True)
    for file, value in files.items():
        with open(os.path.join(path, file), "w") as f:
            f.write(str(value))
    CGROUPS.append(path)
    return path


def quota_cgroup(name, cpus):
    """Creates a cgroup whose CFS quota is `cpus` CPUs; returns its directory."""
    kind = quota_support()
    if kind is None:
        raise RuntimeError("no writable cgroup cpu controller (root and cgroup v1 or v2 needed)")
    period, quota = 100_000, int(cpus * 100_000)
    if kind == "v1":
        return make_cgroup(CGROUP_V1, name, {"cpu.cfs_period_us": period,
                                             "cpu.cfs_quota_us": quota})
    return make_cgroup(CGROUP_V2, name, {"cpu.max": f"{quota} {period}"}, "cpu")


CGROUP_V1_MEMORY = "/sys/fs/cgroup/memory"


def memory_cgroup(name, limit_bytes):
    """Creates a cgroup whose memory limit is `limit_bytes` (a pod's `limits.memory`: the
    kernel reclaims, then OOM-kills inside it); returns (its directory, 'v1' or 'v2')."""
    if os.path.exists(os.path.join(CGROUP_V1_MEMORY, "memory.limit_in_bytes")):
        return make_cgroup(CGROUP_V1_MEMORY, name, {"memory.limit_in_bytes": limit_bytes}), "v1"
    return make_cgroup(CGROUP_V2, f"{name}-mem", {"memory.max": limit_bytes}, "memory"), "v2"


def memory_figures(path, kind):
    """(peak usage in bytes or None, OOM kills) of a memory cgroup made by memory_cgroup."""
    def read(name):
        try:
            with open(os.path.join(path, name)) as f:
                return f.read()
        except OSError:
            return ""
    peak = read("memory.max_usage_in_bytes" if kind == "v1" else "memory.peak").strip()
    events = read("memory.oom_control" if kind == "v1" else "memory.events")
    kills = 0
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            kills = int(value)
    return (int(peak) if peak.isdigit() else None), kills


def in_cgroup(cmd, path):
    """cmd started inside the cgroup at path (the shell moves itself there, then execs)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', path] + cmd


def remove_cgroups():
    for path in CGROUPS:
        for _ in range(20):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)  # its last process is still exiting
    CGROUPS.clear()


class Placement:
    """Where a measured process runs: pinned to a CPU list (taskset), under a CPU quota of its
    own cgroup (a pod's CPU limit), or free (nothing set: the scheduler decides)."""

    def __init__(self, cpus=None, quota=None, memory=None):
        self.cpus, self.quota = cpus, quota
        self.memory = memory  # (directory, kind) of a memory cgroup from memory_cgroup

    def command(self, name, cmd):
        cmd = pinned(cmd, self.cpus)
        if self.quota is not None:
            cmd = in_cgroup(cmd, quota_cgroup(name, self.quota))
        if self.memory is not None:
            cmd = in_cgroup(cmd, self.memory[0])
        return cmd

    def describe(self):
        if self.quota is not None:
            return f"CPU quota {self.quota:g} (own cgroup)"
        if self.cpus is not None:
            return f"CPU {self.cpus}"
        return "free"


# Threads that do a proxy's background work. Under SCHED_FIFO a thread runs until it blocks,
# so stitch's export thread would encode a whole batch ahead of the requests waiting on the
# same core — which the normal scheduler, the one production runs, never lets happen.
BACKGROUND_THREADS = {"stitch-export"}


def thread_name(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        return f.read().strip()


def set_realtime(pids, on):
    """Moves every thread of pids to SCHED_FIFO (on) or back to the normal policy (off);
    BACKGROUND_THREADS keep the normal policy."""
    if not REALTIME_PRIORITY[0]:
        return
    if on:
        policy, param = os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY[0])
    else:
        policy, param = os.SCHED_OTHER, os.sched_param(0)
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                if on and thread_name(pid, tid) in BACKGROUND_THREADS:
                    continue
                os.sched_setscheduler(int(tid), policy, param)
            except OSError:
                pass  # the thread ended meanwhile


def start(name, cmd, workdir, env=None, cpus=None):
    """Starts a long-running process in its own process group, logging to workdir/name.log.
    cpus: a CPU list to pin it to (taskset), a Placement, or None (free)."""
    placement = cpus if isinstance(cpus, Placement) else Placement(cpus=cpus)
    cmd = placement.command(name, cmd)
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
    remove_cgroups()


def on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def run_generator(cmd, timeout_s, cpus):
    """Runs a load generator to completion (killed after timeout_s).

    Returns (exit code, stdout text, the generator's own CPU use as a share of one core over
    its lifetime).
    """
    return wait_generators([spawn_generator(cmd, cpus)], timeout_s)[0]


def spawn_generator(cmd, cpus, realtime=False):
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(pinned(cmd, cpus, realtime), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    prioritise(proc.pid)
    STARTED.append(proc)
    proc.started = time.time()
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
        lifetime = max(time.time() - proc.started, 1e-3)
        results.append((proc.returncode, text, (usage.ru_utime + usage.ru_stime) / lifetime))
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


def status_mib(pids, field):
    """A memory figure of /proc/PID/status (VmHWM, VmRSS), summed over pids, in MiB."""
    total_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def peak_rss_mib(pids):
    return status_mib(pids, "VmHWM")


def current_rss_mib(pids):
    return status_mib(pids, "VmRSS")


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
    # The CPUs the backend and proxies are pinned to; None when they are not pinned (then the
    # other-load share of "their" core means nothing and is not reported).
    sut_cpus = set()

    def __init__(self, target):
        self.pids = process_tree(target.proc.pid) if target.proc else []
        reset_peak_rss(self.pids)
        self.cpu_start = cpu_seconds(self.pids)
        self.backend_start = cpu_seconds([Probe.backend_pid])
        self.core_start = core_busy_seconds(Probe.sut_cpus) if Probe.sut_cpus else 0.0
        self.wall_start = time.time()

    def finish(self, result, work_units, per=10_000):
        """Adds cpu (seconds per `per` work units), rss_mib and the core shares to result."""
        wall = time.time() - self.wall_start
        backend = cpu_seconds([Probe.backend_pid]) - self.backend_start
        used = cpu_seconds(self.pids) - self.cpu_start if self.pids else 0.0
        result["backend_core"] = backend / wall
        if Probe.sut_cpus:
            # Whatever else ran on the proxy's core meanwhile (other processes, hypervisor steal).
            others = core_busy_seconds(Probe.sut_cpus) - self.core_start - backend - used
            result["other_core"] = max(0.0, others) / wall
        if self.pids:
            if work_units > 0:
                result["cpu"] = used / work_units * per
            result["proxy_core"] = used / wall
            result["rss_mib"] = peak_rss_mib(self.pids)
        return result
