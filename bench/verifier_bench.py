"""Benchmark: how fast `tlog-verify` audits and monitors a log of a million entries.

Uses the log bench/build_log.py keeps in its cache directory (building it first unless
--skip-build), starts its PostgreSQL cluster and one `tlog serve`, then measures in one run:

  a. the machine: hashlib SHA-256 (32-, 65- and 400-byte inputs), Ed25519 verify (PyNaCl,
     and verifier.protocol.ed25519 as used for entry signatures) and parse_leaf (full
     validation of one entry) per second, on one core and on two processes;
  b. `audit --full` hash-only (full_audit(validate=False) through the Python API, fresh state,
     --workers N and 0): over HTTP, first while `tlog serve --tile-cache` keeps the full
     tiles it serves ("cold"), then again with them kept ("warm"); over HTTP while filling
     the client's on-disk tile cache, and from that cache ("hash" and "cached" phases).
     Later phases always find tlog serve's tile cache warm (it is warmed if need be);
  c. `tlog-verify audit --full --workers N`: every entry validated, every signature checked;
  d. `tlog-verify monitor --workers N` backfilling from entry 0, JSON Lines to /dev/null.

Every measured client runs as its own process: its wall time (process start to exit) gives
entries/s, and a sampler records the peak RSS of its whole process tree, its CPU time and the
CPU time `tlog serve` and PostgreSQL spent meanwhile. Prints a table with each target, and
with --profile DIR the busiest frames of py-spy profiles of every client and of the server.

Usage: python bench/verifier_bench.py [--entries 1000000] [--cache-dir /tmp/tlog-bench-log]
       [--batch 50000] [--skip-build] [--workers 2] [--only hash,cached,full,monitor]
       [--profile DIR] [--work-dir DIR] [--keep-work]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_log

from tests.support import Server, start_server

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BIN = Path(sys.executable).parent
TARGETS = {"hash": 200_000.0, "cached": 200_000.0, "full": 25_000.0, "monitor": 20_000.0}
PHASES = ("hash", "cached", "full", "monitor")


# -- a. machine rates ---------------------------------------------------------------------


def sha256_rate(size: int, seconds: float = 1.0) -> float:
    """hashlib.sha256(data).digest() calls per second for `size`-byte inputs, one core."""
    data = os.urandom(size)
    sha256 = hashlib.sha256
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(5000):
            sha256(data).digest()
        count += 5000
    return count / elapsed


def _signed_sample() -> tuple[bytes, bytes, bytes]:
    """(public key, message, signature) shaped like an entry's signed message."""
    import nacl.signing

    key = nacl.signing.SigningKey.generate()
    message = b"tlog/release/v1\n" + os.urandom(190).hex().encode()  # ~400 bytes
    return bytes(key.verify_key), message, bytes(key.sign(message).signature)


def ed25519_rate(seconds: float = 1.0, library: str = "pynacl") -> float:
    """Ed25519 verifications per second on one core: PyNaCl's VerifyKey.verify (key object
    reused), or verifier.protocol.ed25519.verify ("entries": what entry signatures are checked
    with)."""
    import nacl.signing

    from verifier.protocol import ed25519

    public, message, signature = _signed_sample()
    if library == "entries":
        def verify(message: bytes, signature: bytes) -> object:
            return ed25519.verify(public, message, signature)
    else:
        verify = nacl.signing.VerifyKey(public).verify
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(500):
            verify(message, signature)
        count += 500
    return count / elapsed


def parse_leaf_rate(leaves: list[bytes], seconds: float = 1.0) -> float:
    """verifier.protocol.entries.release.parse_leaf (JSON, schema, JCS, Ed25519) per second on one
    core."""
    from verifier.protocol.entries.release import parse_leaf

    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for leaf in leaves:
            parse_leaf(leaf)
        count += len(leaves)
    return count / elapsed


def _rate_job(job: tuple[str, Any]) -> float:
    name, arg = job
    if name == "sha256":
        return sha256_rate(int(arg))
    if name == "parse_leaf":
        return parse_leaf_rate(arg)
    return ed25519_rate(library=arg)


@dataclass
class MachineRates:
    sha256: dict[int, tuple[float, float]]  # input size -> (one core, two processes)
    ed25519: tuple[float, float]  # PyNaCl
    # verifier.protocol.ed25519 (ed25519-zebra, libsodium's rules)
    entry_ed25519: tuple[float, float]
    parse_leaf: tuple[float, float]


def _timed_job(job: tuple[str, Any], start: Any, results: Any) -> None:
    start.wait()  # every process starts timing together
    results.put(_rate_job(job))


def parallel_rate(job: tuple[str, Any], processes: int = 2) -> float:
    """The summed rate of `processes` processes running `job` at the same time."""
    ctx = get_context("spawn")
    start, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_timed_job, args=(job, start, results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    total = sum(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join()
    return float(total)


def machine_rates(sample_leaves: list[bytes]) -> MachineRates:
    def both(job: tuple[str, Any]) -> tuple[float, float]:
        return _rate_job(job), parallel_rate(job)

    sha = {size: both(("sha256", size)) for size in (32, 65, 400)}
    return MachineRates(sha, both(("ed25519", "pynacl")), both(("ed25519", "entries")),
                        both(("parse_leaf", sample_leaves)))


# -- process sampling ----------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds) of a process, counting its children that it has reaped.

    A PostgreSQL backend that exits (a closed connection, an autovacuum worker) leaves the
    process tree; its CPU time then shows in the postmaster's cutime and cstime instead.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / TCK


def _rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def descendants(root: int) -> list[int]:
    """`root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid, _ = _stat(int(name))
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    total = 0.0
    for pid in descendants(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += _stat(pid)[1]
    return total


class TreeSampler(threading.Thread):
    """Samples a process tree every `interval` s: peak summed RSS and each process's VmHWM."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_tree = 0
        self.hwm: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total = 0
            for pid in descendants(self.root):
                with contextlib.suppress(OSError, ValueError):
                    rss, hwm = _rss(pid)
                    total += rss
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
            self.peak_tree = max(self.peak_tree, total)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


@dataclass
class Measured:
    """One measured client process."""

    name: str
    entries: int
    wall: float  # process start to exit
    cpu: float  # user + system of the process and its children (wait4)
    serve_cpu: float  # `tlog serve` CPU seconds meanwhile
    pg_cpu: float  # PostgreSQL CPU seconds meanwhile
    main_hwm: int  # peak RSS of the main process (VmHWM)
    tree_peak: int  # peak of the summed RSS of the process tree (sampled)
    max_child: int  # ru_maxrss from wait4: the largest single process
    output: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.entries / self.wall

    def per_entry(self, cpu_seconds: float) -> float:
        """CPU microseconds per entry."""
        return cpu_seconds / self.entries * 1e6


@dataclass
class Env:
    log: build_log.BenchLog
    server: Server
    postmaster: int
    work: Path
    profile: Path | None = None  # py-spy profiles go here (figures then include its cost)
    warm: bool = False  # whether tlog serve's tile cache holds every full tile already


PY_SPY = BIN / "py-spy"


def measure(env: Env, name: str, cmd: list[str], entries: int,
            stdout: Path | None = None) -> Measured:
    """Run `cmd` to completion, sampling memory and everyone's CPU; fail on a non-zero exit.

    With env.profile, py-spy records the client (and its worker processes) and `tlog serve`
    meanwhile, as raw collapsed stacks that `summarize_profile` reads.
    """
    spy: subprocess.Popen[bytes] | None = None
    if env.profile is not None:
        cmd = [str(PY_SPY), "record", "--subprocesses", "--nonblocking", "-r", "100", "-f",
               "raw", "-o", str(env.profile / f"{name}-client.txt"), "--", *cmd]
        spy = subprocess.Popen([str(PY_SPY), "record", "--nonblocking", "-r", "100", "-f", "raw",
                                "-o", str(env.profile / f"{name}-serve.txt"),
                                "--pid", str(env.server.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve0, pg0 = _stat(env.server.proc.pid)[1], tree_cpu(env.postmaster)
    out_path = env.work / f"{name}.out"  # stderr, and stdout unless `stdout` is given
    with out_path.open("wb") as log, (stdout or out_path).open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log if stdout is None else out,
                                stderr=subprocess.STDOUT if stdout is None else log)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    serve1, pg1 = _stat(env.server.proc.pid)[1], tree_cpu(env.postmaster)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    output = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}")
    return Measured(name, entries, wall, usage.ru_utime + usage.ru_stime, serve1 - serve0,
                    pg1 - pg0, sampler.hwm.get(proc.pid, 0), sampler.peak_tree,
                    usage.ru_maxrss * 1024, output)


# -- b. hash-only audit through the Python API (run in a child process) --------------------


def child_hash_audit(argv: list[str]) -> None:
    """`verifier_bench.py child-hash-audit`: one full_audit(validate=False) on a fresh state."""
    ap = argparse.ArgumentParser(prog="verifier_bench.py child-hash-audit")
    ap.add_argument("--log", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--workers", type=int)
    args = ap.parse_args(argv)
    from verifier.client.audit import full, incremental
    from verifier.client.keys import read_vkey
    from verifier.client.log import LogClient
    from verifier.client.statedir import StateDir
    from verifier.protocol.trust import KeyTrust

    key = read_vkey(args.key, "log key")
    client = LogClient(args.log, cache_dir=args.cache)
    with StateDir(args.state) as state:
        trusted = incremental.audit(client, KeyTrust(key), state)
        result = full.full_audit(client, trusted, state, workers=args.workers, validate=False)
    print(result.summary())
    print(json.dumps({"entries": result.entries, "elapsed": result.elapsed,
                      "tiles": result.tiles, "size": result.size}))


def _api_result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise SystemExit(f"no result in:\n{output[-2000:]}")


def run_hash(env: Env, size: int, name: str, cache: Path | None,
             workers: int | None) -> Measured:
    state = env.work / f"state-{name}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "child-hash-audit",
           "--log", env.server.url, "--key", str(env.log.vkey_file), "--state", str(state)]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    m = measure(env, name, cmd, size)
    m.extra = _api_result(m.output)
    if m.extra["entries"] != size:
        raise SystemExit(f"{name}: audited {m.extra['entries']} entries, want {size}")
    return m


# -- c, d. the CLI --------------------------------------------------------------------------


def run_full(env: Env, size: int, workers: int) -> Measured:
    cmd = [str(BIN / "tlog-verify"), "audit", "--log", env.server.url,
           "--key", str(env.log.vkey_file), "--state", str(env.work / "state-full"), "--full",
           "--workers", str(workers)]
    m = measure(env, "full", cmd, size)
    if f"OK audited 0..{size}" not in m.output:
        raise SystemExit(f"audit --full did not report success:\n{m.output[-2000:]}")
    return m


def run_monitor(env: Env, size: int, workers: int) -> Measured:
    cmd = [str(BIN / "tlog-verify"), "monitor", "--log", env.server.url,
           "--key", str(env.log.vkey_file), "--state", str(env.work / "state-monitor"),
           "--workers", str(workers)]
    return measure(env, "monitor", cmd, size, stdout=Path(os.devnull))


# -- profiles -------------------------------------------------------------------------------

IDLE_FRAMES = ("select (selectors.py", "wait (threading.py", "_worker (concurrent/futures/thread",
               "_wait_for_tstate_lock", "acquire", "readinto (socket.py", "accept (socket.py",
               "poll (", "recv_bytes", "_recv (", "_send (multiprocessing")


def summarize_profile(path: Path, top: int = 12) -> str:
    """The busiest frames of a py-spy raw profile: self time, then inclusive time.

    Samples whose innermost frame waits (select, lock, socket read, queue) are counted as
    idle and left out of the percentages, which are of the busy samples.
    """
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        if any(marker in frames[-1] for marker in IDLE_FRAMES):
            idle += n
            continue
        busy += n
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not busy:
        return f"  {path.name}: no busy samples"
    lines = [f"  {path.name}: {busy} busy samples ({idle} idle left out)", "    self:"]
    lines += [f"    {n / busy:6.1%}  {frame}" for frame, n in
              sorted(self_time.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("    inclusive (frames under 90%):")
    lines += [f"    {n / busy:6.1%}  {frame}" for frame, n in
              sorted(inclusive.items(), key=lambda kv: -kv[1]) if n / busy < 0.9][:top]
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


LABELS = {
    "hash-cold": "audit --full hash-only, HTTP, cold",
    "hash": "  same, server's tile cache warm",
    "hash-w0": "  same, --workers 0 (inline)",
    "hash-fill": "  same, filling a disk tile cache",
    "cached": "audit --full hash-only, disk cache",
    "cached-w0": "  same, --workers 0 (inline)",
    "full": "audit --full, signatures (CLI)",
    "monitor": "monitor backfill from 0 (CLI)",
}


GOAL_RATIO = 0.8  # issue 13: audit and monitor at >= 0.8 x the 2-process validation rate


def ratio_lines(rates: MachineRates, results: list[Measured]) -> list[str]:
    """Audit --full and monitor backfill as ratios to the machine's entry-validation rate
    with two processes (parse_leaf: JSON, schema, JCS, Ed25519), measured in this run."""
    ceiling = rates.parse_leaf[1]
    found = {m.name: m for m in results if m.name in ("full", "monitor")}
    if not found:
        return []
    lines = ["", f"ratios to the machine's 2-process entry-validation rate measured in this run "
                 f"({ceiling:,.0f} parse_leaf/s; goal >= {GOAL_RATIO}):"]
    for name, m in found.items():
        label = LABELS[name].split(" (")[0]
        lines.append(f"  {label + ' / validation-rate-2proc':<58} {m.rate / ceiling:5.2f} x "
                     f"({m.rate:,.0f} / {ceiling:,.0f})")
    # On a shared machine both rates move with the load; CPU time per entry hardly does.
    validate_us = 1e6 / rates.parse_leaf[0]
    lines.append(f"  in CPU time (parse_leaf's {validate_us:.1f} us on one core / the client's "
                 "CPU us per entry: the ratio when CPU-bound):")
    for name, m in found.items():
        label = LABELS[name].split(" (")[0]
        lines.append(f"  {label + ' (CPU)':<58} {validate_us / m.per_entry(m.cpu):5.2f} x "
                     f"({validate_us:.1f} / {m.per_entry(m.cpu):.1f} us)")
    return lines


def report(rates: MachineRates, results: list[Measured], log: build_log.BenchLog, when: str,
           load: tuple[tuple[float, ...], tuple[float, ...]], workers: int) -> str:
    leaf = log.marker.get("leaf_bytes", {})
    lines = [f"tlog-verify benchmark, {when}: a log of {log.size:,} entries (leaves "
             f"{leaf.get('avg', '?')} bytes on average, {log.marker.get('publishers', '?')} "
             f"publishers, {log.marker.get('packages', '?')} packages), "
             f"{len(os.sched_getaffinity(0))} CPUs, load average "
             f"{load[0][0]:.1f} before, {load[1][0]:.1f} after",
             "", f"{'machine, same run':<40} {'1 core':>12} {'2 processes':>12}"]
    for n, (one, two) in rates.sha256.items():
        lines.append(f"{f'  hashlib sha256, {n}-byte input':<40} {one:>10,.0f}/s {two:>10,.0f}/s")
    lines.append(f"{'  PyNaCl Ed25519 verify, ~400-byte msg':<40} {rates.ed25519[0]:>10,.0f}/s "
                 f"{rates.ed25519[1]:>10,.0f}/s")
    lines.append(f"{'  entry Ed25519 verify (zebra + checks)':<40} "
                 f"{rates.entry_ed25519[0]:>10,.0f}/s {rates.entry_ed25519[1]:>10,.0f}/s")
    lines.append(f"{'  parse_leaf (JSON, schema, JCS, Ed25519)':<40} "
                 f"{rates.parse_leaf[0]:>10,.0f}/s {rates.parse_leaf[1]:>10,.0f}/s")
    lines += ["", f"{'measurement (workers ' + str(workers) + ' unless said)':<38} "
                  f"{'entries/s':>10} {'target':>8} {'ratio':>5} {'wall':>6}  "
                  f"{'CPU us/entry':^20}  {'cores':^16}  {'peak RSS MiB':>12}",
              f"{'':<38} {'':>10} {'':>8} {'':>5} {'s':>6}  "
              f"{'client':>6} {'serve':>6} {'pg':>6}  {'client':>6} {'serve':>4} {'pg':>4}  "
              f"{'main':>5} {'tree':>6}"]
    for m in results:
        target = TARGETS.get(m.name.split("-")[0])
        tgt = f"{target:>8,.0f}" if target else f"{'-':>8}"
        ratio = f"{m.rate / target:>5.2f}" if target else f"{'-':>5}"
        lines.append(
            f"{LABELS.get(m.name, m.name):<38} {m.rate:>10,.0f} {tgt} {ratio} {m.wall:>6.1f}  "
            f"{m.per_entry(m.cpu):>6.1f} {m.per_entry(m.serve_cpu):>6.1f} "
            f"{m.per_entry(m.pg_cpu):>6.1f}  {m.cpu / m.wall:>6.2f} "
            f"{m.serve_cpu / m.wall:>4.2f} {m.pg_cpu / m.wall:>4.2f}  "
            f"{m.main_hwm / 2**20:>5,.0f} {m.tree_peak / 2**20:>6,.0f}")
    cores = len(os.sched_getaffinity(0))
    lines += ["", "CPU-bound ceilings on this machine (all its cores busy with nothing else):"]
    for m in results:
        total = m.per_entry(m.cpu + m.serve_cpu + m.pg_cpu)
        lines.append(f"  {LABELS.get(m.name, m.name).strip():<38} {total:6.1f} us CPU/entry "
                     f"in all processes -> at most {cores * 1e6 / total:>9,.0f} entries/s")
    ceiling = cores * rates.entry_ed25519[0]
    lines.append(f"  signature checking: {cores} x {rates.entry_ed25519[0]:,.0f} entry Ed25519 "
                 "verifications/s"
                 f" = {ceiling:,.0f}/s; {cores} x parse_leaf = "
                 f"{cores * rates.parse_leaf[0]:,.0f} entries/s")
    lines += ratio_lines(rates, results)
    lines += ["",
              "entries/s: entries / wall time of the client process, start to exit. CPU: user + "
              "system time of the client",
              "and its worker processes (wait4), of `tlog serve` and of the PostgreSQL cluster "
              "during the run. RSS main:",
              "VmHWM of the client's main process; tree: peak of the summed RSS of the client "
              "and its workers (sampled every 50 ms)."]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def running(log: build_log.BenchLog, work: Path) -> Iterator[Env]:
    with build_log.cluster_up(log):
        postmaster = int((log.cluster.data_dir / "postmaster.pid").read_text().split()[0])
        # As a production log would run: full tiles kept on disk once served.
        server = start_server(log.url, log.key_file, work, timeout=120,
                              extra=["--policy", "open", "--tile-cache", str(work / "serve")])
        try:
            yield Env(log, server, postmaster, work)
        finally:
            server.stop()


def warm_up(env: Env, size: int) -> None:
    """Fetch every full bundle and tile once, so that tlog serve keeps them on disk (as it
    would have after the first client of a long-running log)."""
    import urllib.request

    from verifier.protocol.tiles import TILE_HEIGHT, tile_path

    started = time.perf_counter()
    paths = [tile_path(-1, n) for n in range(size // 256)]
    level = 0
    while (count := size >> (TILE_HEIGHT * (level + 1))) > 0:
        paths += [tile_path(level, n) for n in range(count)]
        level += 1
    for path in paths:
        with urllib.request.urlopen(f"{env.server.url}/{path}", timeout=60) as resp:
            resp.read()
    env.warm = True
    print(f"  warmed tlog serve's tile cache: {len(paths):,} full tiles in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def sample_leaves(url: str, count: int = 512) -> list[bytes]:
    import urllib.request

    from verifier.protocol.tiles import decode_bundle

    leaves: list[bytes] = []
    n = 0
    while len(leaves) < count:
        with urllib.request.urlopen(f"{url}/tile/entries/{n:03d}", timeout=30) as resp:
            leaves += decode_bundle(resp.read(), 256)
        n += 1
    return leaves[:count]


def main() -> None:
    if sys.argv[1:2] == ["child-hash-audit"]:
        child_hash_audit(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=build_log.DEFAULT_ENTRIES,
                    help="log size to build or reuse (default 1,000,000)")
    ap.add_argument("--cache-dir", type=Path, default=build_log.DEFAULT_CACHE,
                    help=f"where build_log.py keeps the log (default {build_log.DEFAULT_CACHE})")
    ap.add_argument("--batch", type=int, default=50_000,
                    help="releases per batch (each ending with a map root) when building")
    ap.add_argument("--skip-build", action="store_true",
                    help="use the log already in --cache-dir, whatever its size")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes of the measured clients (default 2)")
    ap.add_argument("--only", default=",".join(PHASES),
                    help=f"comma-separated phases to run (default: {','.join(PHASES)})")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="record every run with py-spy into DIR and print the busiest frames "
                         "(slows everything down: figures are then not comparable)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where state and tile-cache directories go (default: a temp dir)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    phases = [p for p in args.only.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        ap.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    if args.skip_build:
        log = build_log.open_log(args.cache_dir)
    else:
        log = build_log.build(args.cache_dir, args.entries, args.batch)
    size, w = log.size, args.workers
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tlog-verifier-bench-", dir=args.work_dir))
    work.chmod(0o755)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: list[Measured] = []
    try:
        with running(log, work) as env:
            env.profile = args.profile
            print(f"log of {size:,} entries served by {env.server.url} "
                  f"(tlog serve pid {env.server.proc.pid}); work dir {work}", flush=True)
            print("measuring machine rates ...", flush=True)
            rates = machine_rates(sample_leaves(env.server.url))
            tiles = work / "tiles"
            steps: dict[str, Callable[[], list[Measured]]] = {
                "hash": lambda: [run_hash(env, size, "hash-cold", None, w),
                                 run_hash(env, size, "hash", None, w),
                                 run_hash(env, size, "hash-w0", None, 0)],
                "cached": lambda: [run_hash(env, size, "hash-fill", tiles, w),
                                   run_hash(env, size, "cached", tiles, w),
                                   run_hash(env, size, "cached-w0", tiles, 0)],
                "full": lambda: [run_full(env, size, w)],
                "monitor": lambda: [run_monitor(env, size, w)],
            }
            for phase in phases:
                if phase != "hash" and not env.warm:
                    warm_up(env, size)
                for m in steps[phase]():
                    env.warm = True
                    results.append(m)
                    print(f"  {LABELS[m.name].strip()}: {m.rate:,.0f} entries/s "
                          f"({m.wall:.1f} s)", flush=True)
        print()
        print(report(rates, results, log, when, (load_before, os.getloadavg()), w))
        print(f"\nthe log was built by bench/build_log.py in {log.marker.get('build_seconds', '?')}"
              f" s ({log.marker.get('built_at', '?')}, {log.marker.get('workers', '?')} "
              "generator processes)")
        if args.profile is not None:
            print(f"\nprofiles (py-spy, {args.profile}):")
            for path in sorted(args.profile.glob("*.txt")):
                print(summarize_profile(path))
    finally:
        if args.keep_work:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
