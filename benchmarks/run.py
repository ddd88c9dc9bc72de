"""All the benchmarks in one command, one table: ``python -m benchmarks.run [--quick]``.

Every figure comes with its baseline measured in the same run (the hand-written loop, one bare
broker hop, the tick at 1,000 operations, the jobs back to back, the optimizer's own promise,
the worker's memory after warm-up) and the goal it is held to. Sections, in order of value:

1. ``throughput`` — framework ÷ hand loop at sub-batch 1,000 and 100 (:mod:`.throughput`);
2. ``latency`` — enqueue → first sub-batch committed against one dramatiq-pg hop (:mod:`.latency`);
3. ``scheduler`` — one tick at 1k / 10k / 100k unfinished operations (:mod:`.scheduling`);
4. ``fairness`` — many small operations on one worker × 4 threads (:mod:`.fairness`);
5. ``throttle`` — how fast a health stop bites and a hold lets go (:mod:`.throttle`);
6. ``optimizer`` — jobs until the batch size converges (:mod:`.convergence`);
7. ``defaults`` — time to finish at the default settings, simulated clock (:mod:`.defaults`);
8. ``memory`` — worker RSS over a long operation (:mod:`.memory`);
9. ``web`` — the web page's operations list at 10,000 operations (:mod:`.web`).

``--quick`` runs every section smaller (a few minutes in all); ``--only a,b`` picks sections.
Each section has its own fresh database, dropped afterwards, on an embedded Postgres started
for the run or on ``--dsn`` (an admin DSN). A section that fails prints its error in the
table and the others still run (the exit status is then 1). ``--markdown FILE`` also writes
the table and the machine as Markdown (for ``docs/performance.md``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    Context,
    Row,
    machine,
    postgres,
    print_table,
    progress,
)

#: section name → module (each has ``section(ctx) -> list[Row]``), in order of value
SECTIONS = {
    "throughput": "benchmarks.throughput",
    "latency": "benchmarks.latency",
    "scheduler": "benchmarks.scheduling",
    "fairness": "benchmarks.fairness",
    "throttle": "benchmarks.throttle",
    "optimizer": "benchmarks.convergence",
    "defaults": "benchmarks.defaults",
    "memory": "benchmarks.memory",
    "web": "benchmarks.web",
}
#: printed under the table: what holds for every figure
NOTES = (
    "health indicators autovacuum and wal_rate are off in every section but throttle (the"
    " benchmark's own fills and full-speed deletes would trip them and the figure would"
    " measure the hold); throughput fills every side's table before any side runs;"
    " throttle turns all built-ins off and measures its own indicator",
    "throughput: medians of the rounds, sides in an order rotated each round; latency p99 is"
    " nearest-rank; ratios are value ÷ baseline",
)
HEADERS = ["section", "measure", "value", "unit", "baseline", "baseline is", "÷ baseline", "goal"]


def cells(row: Row) -> list[object]:
    ratio = "" if row.ratio is None else round(row.ratio, 3)
    return [row.section, row.measure, row.value, row.unit, row.baseline, row.baseline_name,
            ratio, row.goal]  # fmt: skip


def markdown(rows: Sequence[Row], about: dict[str, str], header: str) -> str:
    def text(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value).replace("|", "\\|")

    lines = [header, "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(text(c) for c in cells(r)) + " |" for r in rows]
    lines += ["", *[f"- {note}" for note in NOTES]]
    lines += ["", "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in about.items()]
    return "\n".join(lines) + "\n"


def run_sections(ctx: Context, names: Sequence[str]) -> tuple[list[Row], bool]:
    rows, ok = [], True
    for name in names:
        progress(f"{name}...")
        started = time.monotonic()
        try:
            module = importlib.import_module(SECTIONS[name])
            rows += module.section(ctx)
        except Exception as error:  # one section's failure must not hide the others' figures
            traceback.print_exc()
            message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
            rows.append(Row(name, "FAILED", message))
            ok = False
        progress(f"{name}: {time.monotonic() - started:.0f} s")
    return rows, ok


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dsn", help="admin DSN of a server (default: embedded Postgres)")
    parser.add_argument("--quick", action="store_true", help="every section smaller (minutes)")
    parser.add_argument("--only", help=f"comma-separated sections among: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds of the throughput sides (default 5; 3 with --quick): each round's order"
        " is rotated, and the median of more rounds moves less with the machine's noise",
    )
    parser.add_argument("--threads", type=int, default=4, help="threads of the worker process")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(SECTIONS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 3:
        parser.error("--repeat must be at least 3 (the figures are medians of >= 3 rounds)")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.getLogger("dramatiq_bbo").addHandler(logging.NullHandler())
    started = time.monotonic()
    with postgres(args.dsn) as admin_dsn:
        ctx = Context(admin_dsn, quick=args.quick, threads=args.threads, repeat=args.repeat)
        rows, ok = run_sections(ctx, args.names)
        about = machine(admin_dsn)
    elapsed = time.monotonic() - started
    about["run"] = f"{'--quick' if args.quick else 'full'}, {elapsed:.0f} s"
    header = f"dramatiq-bbo benchmarks ({about['run']}; Postgres {about['Postgres']})"
    print(f"\n{header}\n")
    print_table(HEADERS, [cells(r) for r in rows], left=(0, 1, 3, 5, 7))
    print("", *[f"note: {note}" for note in NOTES], sep="\n")
    print("\n" + "  ".join(f"{key}: {value}" for key, value in about.items()))
    if args.markdown:
        args.markdown.write_text(markdown(rows, about, header))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
