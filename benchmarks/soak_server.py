"""Soak the prediction server: 50 concurrent clients for 10 minutes; latency per minute, errors, memory.

    python benchmarks/soak_server.py RUN_DIR                           # 50 clients, 10 minutes -> stdout
    python benchmarks/soak_server.py RUN_DIR --write                   # ... and its section of BENCHMARKS.md
    python benchmarks/soak_server.py RUN_DIR --minutes 1 --clients 10  # a short one
    python benchmarks/soak_server.py --minutes 1                       # trains a quick network first
    make soak                                                          # as a test: tests/test_server_soak.py

The server runs in its own process on 127.0.0.1, with its rate limit off (every client here comes
from one address); the clients are load_server.py's keep-alive asyncio connections, each posting
280x280 PNG drawings (what the drawing page sends) back to back. After a warm-up of 30 s, not
counted, each minute gives requests/s, p50, p99 and max latency, errors (any answer but 200, a
failed connection, or no answer within 30 s), the server's resident memory (VmRSS) and the
machine's load average. The server holds when there are no errors and its memory at the end is
within 10% of its memory after the warm-up. Clients and server share the machine's cores, so the
load average says how busy the machine was besides.

Exits with status 1 when the server does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, machine_line, markdown_table, publish  # noqa: E402
from load_server import free_port, payloads, raw_request, read_response, server_process  # noqa: E402

SECTION = "server-soak"  # <!-- server-soak:start --> ... <!-- server-soak:end --> in BENCHMARKS.md
MEMORY_GROWTH = 0.10      # the most the server's RSS may grow from the end of the warm-up to the end
ANSWER_TIMEOUT_S = 30.0   # no answer within this is an error


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time process `pid` has used so far, in seconds (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in brackets, may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of process `pid` now (VmRSS), in MiB; None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


async def soak(url: str, pid: int, clients: int, seconds: float, bodies: list[tuple[str, bytes]],
               warmup_s: float = 30.0, interval_s: float = 60.0) -> dict:
    """`clients` keep-alive connections posting back to back for `warmup_s` + `seconds`.

    Returns the per-interval table (`intervals`), every error (`failures`: seconds from the end of
    the warm-up, what), and the server's memory: after the warm-up, at the end and at its peak.
    Times are seconds from the end of the warm-up; the warm-up's answers are not in the table, its
    errors are.
    """
    parts = urlsplit(url)
    requests = [raw_request(parts.netloc, "/api/predict", ctype, body) for ctype, body in bodies]
    answered: list[tuple[float, float]] = []         # (when, latency s) of each 200
    failures: list[tuple[float, str]] = []           # (when, what) of each error
    samples: list[tuple[float, float, float]] = []   # (when, server RSS MiB, 1-minute load average)
    cpu: dict[str, list[float | None]] = {"server": [], "clients": []}  # after the warm-up, at the end
    start = time.perf_counter() + warmup_s
    stop = start + seconds

    async def client(k: int) -> None:
        reader = writer = None
        i = k
        while time.perf_counter() < stop:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                sent = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status = await asyncio.wait_for(read_response(reader), ANSWER_TIMEOUT_S)
                now = time.perf_counter()
                if status == 200:
                    answered.append((now - start, now - sent))
                else:
                    failures.append((now - start, f"status {status}"))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration) as error:
                failures.append((time.perf_counter() - start, type(error).__name__))
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.1)  # a refused connection must not spin
            i += clients
        if writer is not None:
            writer.close()

    async def sampler() -> None:
        while True:
            now = time.perf_counter()
            samples.append((now - start, rss_mib(pid) or float("nan"), os.getloadavg()[0]))
            if (now >= start and not cpu["server"]) or now >= stop:
                cpu["server"].append(cpu_seconds(pid))
                cpu["clients"].append(time.process_time())
            if now >= stop:
                return
            await asyncio.sleep(min(1.0, max(0.0, (start if now < start else stop) - now)))

    await asyncio.gather(sampler(), *(client(k) for k in range(clients)))
    results = summarise(answered, failures, samples, clients=clients, seconds=seconds, warmup_s=warmup_s,
                        interval_s=interval_s)
    elapsed = samples[-1][0] - next(t for t, _, _ in samples if t >= 0)
    for who, (first, last) in cpu.items():  # cores busy on average: the soak's own share of the load
        results[f"{who}_cores"] = None if first is None or last is None else round((last - first) / elapsed, 2)
    if results["server_cores"] is not None and results["requests"]:
        results["server_cpu_ms_per_answer"] = round(1000 * results["server_cores"] * elapsed / results["requests"], 2)
    return results


def summarise(answered, failures, samples, *, clients: int, seconds: float, warmup_s: float,
              interval_s: float) -> dict:
    """The soak's table and verdict from its raw observations (see `soak`)."""
    when = np.array([t for t, _ in answered])
    latency_ms = 1000 * np.array([s for _, s in answered])
    sample_t = np.array([t for t, _, _ in samples])
    intervals = []
    for k in range(max(1, round(seconds / interval_s))):
        lo, hi = k * interval_s, min((k + 1) * interval_s, seconds)
        ms = latency_ms[(when >= lo) & (when < hi)]
        last = samples[int(np.flatnonzero(sample_t <= hi + 0.5)[-1])]
        intervals.append({
            "from_s": lo, "to_s": hi, "requests": int(ms.size), "rps": ms.size / (hi - lo),
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
            "max_ms": float(ms.max()) if ms.size else None,
            "errors": sum(lo <= t < hi for t, _ in failures),
            "rss_mib": round(last[1], 1), "load_average": round(last[2], 2)})
    after_warmup = next(s for s in samples if s[0] >= 0)
    measured = latency_ms[when >= 0]
    rss_measured = [s[1] for s in samples if s[0] >= 0]
    return {
        "clients": clients, "seconds": seconds, "warmup_s": warmup_s, "interval_s": interval_s,
        "requests": int(measured.size), "rps": measured.size / seconds,
        "p50_ms": float(np.percentile(measured, 50)) if measured.size else None,
        "p99_ms": float(np.percentile(measured, 99)) if measured.size else None,
        "errors": len(failures), "failures": failures[:100],
        "rss_after_warmup_mib": round(after_warmup[1], 1), "rss_end_mib": round(samples[-1][1], 1),
        "rss_peak_mib": round(max(rss_measured), 1),
        "load_average_start": round(after_warmup[2], 2), "load_average_end": round(samples[-1][2], 2),
        "intervals": intervals,
    }


def problems(results: dict) -> list[str]:
    """Why the server did not hold; empty when it did."""
    out = []
    if results["errors"]:
        kinds = sorted({what for _, what in results["failures"]})
        out.append(f"{results['errors']} errors ({', '.join(kinds)})")
    start, end = results["rss_after_warmup_mib"], results["rss_end_mib"]
    if not end <= (1 + MEMORY_GROWTH) * start:  # also catches a NaN: memory that could not be read
        out.append(f"server memory grew from {start:,.1f} MiB after the warm-up to {end:,.1f} MiB "
                   f"(more than {MEMORY_GROWTH:.0%})")
    return out


def duration(seconds: float) -> str:
    """600 -> '10 minutes', 60 -> '1 minute', 40 -> '40 s'."""
    if seconds % 60:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} minute" + ("s" if seconds != 60 else "")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def markdown(results: dict) -> str:
    """The BENCHMARKS.md section: heading, command, machine, the table per interval, the verdict."""
    r = results
    if r["interval_s"] == 60:
        unit, label = "minute", lambda i: f"{i['from_s'] / 60 + 1:.0f}"
    else:
        unit, label = "seconds", lambda i: f"{i['from_s']:g}–{i['to_s']:g}"
    rows = [[label(i), f"{i['requests']:,}", f"{i['rps']:,.0f}", _ms(i["p50_ms"]),
             _ms(i["p99_ms"]), _ms(i["max_ms"]), i["errors"], f"{i['rss_mib']:,.1f}", f"{i['load_average']:.2f}"]
            for i in r["intervals"]]
    table = markdown_table([unit, "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "server RSS MiB",
                            "load average"], rows)
    growth = r["rss_end_mib"] / r["rss_after_warmup_mib"] - 1
    found = problems(r)
    verdict = ("**The server held**" if not found else "**The server did not hold**: " + "; ".join(found))
    served = r.get("served", "")
    payload = ("28×28 pixels as JSON" if r.get("payload") == "json" else
               "280×280 PNG drawings (MNIST test digits, as the drawing page sends them)")
    own = ""
    if r.get("server_cores") is not None and r.get("clients_cores") is not None:
        own = (f" The soak itself kept {r['server_cores'] + r['clients_cores']:.2f} cores busy on average "
               f"(server {r['server_cores']:.2f}, clients {r['clients_cores']:.2f}): load above that was other work.")
    if r.get("server_cpu_ms_per_answer"):
        own += (f" The server spent {r['server_cpu_ms_per_answer']:.1f} ms of CPU per answer, a figure the rest of "
                "the machine's load does not change much.")
    return "\n".join([
        f"## Server soak: {r['clients']} clients for {duration(r['seconds'])}",
        "",
        f"Command: `{r.get('command', 'python benchmarks/soak_server.py')}`",
        "",
        f"Machine: {machine_line(r['machine'])}" if "machine" in r else "",
        "",
        f"{r['clients']} keep-alive clients on 127.0.0.1 posted {payload} back to back to a server in its own "
        f"process{served}, rate limit off; {r['warmup_s']:g} s of warm-up, not counted, then {duration(r['seconds'])}. "
        "Clients and server share the machine's cores with whatever else runs there; the load average (1-minute, "
        f"at the end of each row) says how busy it was: {r['load_average_start']:.2f} after the warm-up, "
        f"{r['load_average_end']:.2f} at the end.{own}",
        "",
        table,
        "",
        f"{verdict}: {r['requests']:,} answers in {duration(r['seconds'])} ({r['rps']:,.0f}/s; p50 {_ms(r['p50_ms'])} ms, "
        f"p99 {_ms(r['p99_ms'])} ms), {r['errors']} errors; server RSS {r['rss_after_warmup_mib']:,.1f} MiB after "
        f"the warm-up, {r['rss_end_mib']:,.1f} MiB at the end ({growth:+.1%}; the bound is "
        f"+{MEMORY_GROWTH:.0%}), peak {r['rss_peak_mib']:,.1f} MiB.",
    ])


def write(results: dict, path: Path) -> None:
    """Replace (or add) this benchmark's section of the markdown file at `path`."""
    from run_all import write_sections

    write_sections(path, {SECTION: markdown(results)})


def run(run_dir: Path, bodies: list[tuple[str, bytes]], clients: int, seconds: float, warmup_s: float = 30.0,
        interval_s: float = 60.0) -> dict:
    """Serve `run_dir` in a child process and soak it; `soak`'s results, with the machine."""
    started = machine()
    with server_process(run_dir, free_port()) as (url, pid):
        results = asyncio.run(soak(url, pid, clients, seconds, bodies, warmup_s, interval_s))
    results["machine"] = started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="run directory to serve (default: train a quick network)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--minutes", type=float, default=10.0, help="duration after the warm-up (default 10)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of load before measuring (default 30)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per table row (default 60)")
    parser.add_argument("--payload", choices=["png", "json"], default="png", help="what each request sends")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"), help="where MNIST is")
    parser.add_argument("--write", nargs="?", type=Path, const=REPO / "BENCHMARKS.md", metavar="PATH",
                        help="write the section into this markdown file (default BENCHMARKS.md)")
    parser.add_argument("--json", help="also write the results as JSON to this path")
    args = parser.parse_args()

    bodies = payloads(args.data_dir, args.payload)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        from predict_throughput import quick_run

        run_dir = quick_run(args.data_dir)
    results = run(run_dir, bodies, args.clients, 60 * args.minutes, args.warmup, args.interval)
    results["command"] = " ".join(["python benchmarks/soak_server.py", *sys.argv[1:]])
    results["served"] = f" (`{run_dir.name}`)"
    results["payload"] = args.payload
    publish(results, args.json, markdown)
    if args.write:
        write(results, args.write)
        print(f"wrote {SECTION} to {args.write}", file=sys.stderr)
    if problems(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
