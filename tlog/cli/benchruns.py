"""The figures of `tlog bench --runs N`: medians over the rounds, each round kept, and the
text report.

A round is one measurement of the log (and, with --baseline, of the trivial server right
after it: the rounds interleave, so a machine that slows down part-way slows both sides).
Throughputs, latencies and ratios print as the median over the rounds; counts add up.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

PERCENTILES = ("p50", "p90", "p99", "max")
BASELINES = (("baseline", "ratio"), ("minimal_baseline", "minimal_ratio"))


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def _added(rounds: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in rounds:
        total.update(r.get(key, {}))
    return dict(sorted(total.items()))


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement over its rounds: medians of the rates, latencies and ratios, sums of
    the counts, and every round as it was."""
    out: dict[str, Any] = {
        "runs": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "ok": sum(r["ok"] for r in rounds),
        "seconds": round(sum(r["seconds"] for r in rounds), 3),
        "throughput_rps": median([r["throughput_rps"] for r in rounds]),
        "latency_ms": {p: median([r["latency_ms"][p] for r in rounds]) for p in PERCENTILES},
        "errors": _added(rounds, "errors"),
        "transport_errors": _added(rounds, "transport_errors")}
    if all("entries" in r for r in rounds):
        out["entries"] = sum(r["entries"] for r in rounds)
        out["entries_per_s"] = median([r["entries_per_s"] for r in rounds])
    if any("entry_statuses" in r for r in rounds):
        out["entry_statuses"] = _added(rounds, "entry_statuses")
    if all("by_kind" in r for r in rounds):
        out["by_kind"] = _by_kind(rounds)
    if all("schedule" in r for r in rounds):
        out["schedule"] = _schedule([r["schedule"] for r in rounds])
    for side, ratio in BASELINES:
        if all(side in r for r in rounds):
            out[side] = {k: v for k, v in summarize([r[side] for r in rounds]).items()
                         if k != "rounds"}
            out[side]["reply_bytes"] = rounds[0][side].get("reply_bytes")
            out[ratio] = median([r[ratio] for r in rounds])
    out["rounds"] = rounds
    return out


def _by_kind(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({k for r in rounds for k in r["by_kind"]})
    out: dict[str, Any] = {}
    for kind in kinds:
        rs = [r["by_kind"][kind] for r in rounds if kind in r["by_kind"]]
        out[kind] = {"requests": sum(k["requests"] for k in rs),
                     "throughput_rps": median([k["throughput_rps"] for k in rs]),
                     **{p: median([k[p] for k in rs]) for p in PERCENTILES}}
    return out


def _schedule(rs: list[dict[str, Any]]) -> dict[str, Any]:
    counts = ("scheduled", "sent", "sent_in_window", "on_time", "waited_for_connection",
              "client_late")
    return {"rate": rs[0]["rate"], **{c: sum(r[c] for r in rs) for c in counts},
            "send_lag_ms": {p: median([r["send_lag_ms"][p] for r in rs])
                            for p in PERCENTILES},
            "loop_lag_ms": {p: median([r["loop_lag_ms"][p] for r in rs])
                            for p in PERCENTILES},
            "client_cpu": median([r["client_cpu"] for r in rs]),
            "client_kept_up": all(r["client_kept_up"] for r in rs)}


# -- the text report -------------------------------------------------------------------------


def _each(rounds: list[dict[str, Any]], pick: Any, fmt: str = "{:,.1f}") -> str:
    """ ' [a b c]': the figure of every round, when there is more than one."""
    if len(rounds) < 2:
        return ""
    return " [" + " ".join(fmt.format(pick(r)) for r in rounds) + "]"


def figures(name: str, s: dict[str, Any], rounds: list[dict[str, Any]],
            indent: str = "    ") -> list[str]:
    """The lines of one side (the log or a baseline) of a measurement; `rounds` are that
    side's figures per round."""
    lat = s["latency_ms"]
    runs = f" (median of {s['runs']})" if s.get("runs", 1) > 1 else ""
    out = [f"{indent}{name}: {s['requests']:,} requests in {s['seconds']:.1f} s, "
           f"{s['ok']:,} ok, {s['throughput_rps']:,.1f} ok/s{runs}"
           + _each(rounds, lambda r: r["throughput_rps"])
           + (f", {s['entries_per_s']:,.1f} entries/s" + _each(rounds, lambda r: r["entries_per_s"])
              if "entries_per_s" in s else ""),
           f"{indent}  latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
           f"max {lat['max']}"
           + (f"  (p99 per round{_each(rounds, lambda r: r['latency_ms']['p99'], '{}')})"
              if s.get("runs", 1) > 1 else "")]
    for kind, k in s.get("by_kind", {}).items():
        out.append(f"{indent}  {kind}: {k['requests']:,} requests, {k['throughput_rps']:,.1f} "
                   f"ok/s, latency ms p50 {k['p50']}  p99 {k['p99']}")
    if "schedule" in s:
        out += _schedule_lines(s["schedule"], indent + "  ")
    problems = [f"HTTP {st} x{n}" for st, n in s["errors"].items()]
    problems += [f"{e} x{n}" for e, n in s["transport_errors"].items()]
    problems += [f"entry HTTP {st} x{n}" for st, n in s.get("entry_statuses", {}).items()
                 if st not in ("200", "201")]
    out.append(f"{indent}  errors: " + (", ".join(problems) if problems else "none"))
    return out


def _schedule_lines(c: dict[str, Any], indent: str) -> list[str]:
    lag = c["send_lag_ms"]
    out = [f"{indent}schedule: {c['scheduled']:,} requests due at {c['rate']:g}/s; "
           f"{c['sent']:,} sent, {c['sent_in_window']:,} of them before the schedule ended, "
           f"{c['on_time']:,} on time; send lag ms p50 {lag['p50']}  p99 {lag['p99']}  "
           f"max {lag['max']}"]
    if c["waited_for_connection"]:
        out.append(f"{indent}  {c['waited_for_connection']:,} fell due while every connection "
                   "awaited the log's answer (the log's queue: in its latency; more "
                   "--concurrency sends them on time)")
    loop = c["loop_lag_ms"]
    out.append(f"{indent}  the client: {c['client_late']:,} left late with a connection free; "
               f"its event loop late ms p50 {loop['p50']}  p99 {loop['p99']}  max "
               f"{loop['max']}; CPU {c['client_cpu']:.2f} of one core")
    if not c["client_kept_up"]:
        out.append(f"{indent}  WARNING: the client could not keep up with the schedule (over "
                   "1 % sent late with a connection free, its loop over 10 ms late at p99, or "
                   "a whole core busy): these latencies include the client's own lag")
    return out


def describe_measure(label: str | None, s: dict[str, Any]) -> list[str]:
    lines = [f"  {label}:"] if label else []
    indent = "    " if label else "  "
    rounds = s["rounds"]
    lines += figures("log", s, rounds, indent)
    if "baseline" in s:
        b = s["baseline"]
        what = "trivial aiohttp, same client and requests" + (
            "" if b.get("reply_bytes") is None
            else f", answering the log's {b['reply_bytes']:,} bytes")
        lines += figures(f"baseline ({what})", b, [r["baseline"] for r in rounds], indent)
        lines.append(f"{indent}log/baseline throughput: {s['ratio']:.3f}"
                     + _each(rounds, lambda r: r["ratio"], "{:.3f}"))
    if "minimal_baseline" in s:
        lines += figures("minimal GET (trivial aiohttp, empty body)", s["minimal_baseline"],
                         [r["minimal_baseline"] for r in rounds], indent)
        lines.append(f"{indent}log/minimal GET throughput: {s['minimal_ratio']:.3f}"
                     + _each(rounds, lambda r: r["minimal_ratio"], "{:.3f}"))
    return lines


def describe(result: dict[str, Any]) -> str:
    runs = result.get("runs", 1)
    lines = [f"tlog bench {result['mode']}: {result['log']}, concurrency "
             f"{result['concurrency']}" + (f", rate {result['rate']}/s" if result["rate"]
                                           else "")
             + (f", {runs} interleaved rounds (medians; each round in brackets)"
                if runs > 1 else "")]
    if "by_read_kind" in result:
        for label, s in result["by_read_kind"].items():
            lines += describe_measure(label, s)
    else:
        lines += describe_measure(None, result)
    lines.append(f"  tree size {result['tree_size_before']} -> {result['tree_size_after']}")
    return "\n".join(lines)
