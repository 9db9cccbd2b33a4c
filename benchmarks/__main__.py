"""Run every benchmark, print the table and write benchmarks/results/latest.md (named benchmarks: their rows
replace the rows of the same figure there, the others are kept)."""

from __future__ import annotations

import argparse
import datetime
import importlib

from benchmarks.common import RESULTS, machine

MODULES = ["startup", "claims", "heartbeats", "seed_queries", "training", "dashboard_load", "pages", "foreground",
           "lowcomm", "workloads", "elastic"]
TABLE_HEAD = ["| figure | value | target | status | detail |", "| --- | --- | --- | --- | --- |"]


def main() -> None:
    """Run the named benchmarks (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the benchmarks run, not the figures")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(MODULES)}")
    rows = []
    for name in args.names or MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        for figure in module.measure(quick=args.quick):
            print(figure.row(), flush=True)
            rows.append(figure.row())
    when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC{' (quick sizes)' if args.quick else ''}"
    header = ["# AI Farm benchmarks", "", f"Machine: {machine()}", f"Run: {when}", ""]
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.md"
    if args.names and latest.exists():
        header, rows = merged(latest.read_text().splitlines(), rows, f"{', '.join(args.names)}: {when} on {machine()}")
    latest.write_text("\n".join(header + TABLE_HEAD + rows) + "\n")
    print(f"written to {latest}")


def _figure(row: str) -> str:
    return row.split("|")[1].strip()


def merged(lines: list[str], new: list[str], note: str) -> tuple[list[str], list[str]]:
    """The file's header with a line for this run, and its rows with those of the same figure replaced by `new`."""
    start = next((i for i, line in enumerate(lines) if line.startswith("| figure |")), len(lines))
    header = [line for line in lines[:start]]
    while header and not header[-1].strip():
        header.pop()
    header += [f"Also: {note}", ""]
    old = [line for line in lines[start + 2:] if line.startswith("|")]
    replaced = {_figure(row) for row in new}
    kept = [row for row in old if _figure(row) not in replaced]
    at = {_figure(row): i for i, row in enumerate(old)}
    # A figure already in the table keeps its place; new ones go at the end.
    placed = sorted(kept + [row for row in new if _figure(row) in at], key=lambda row: at.get(_figure(row), 0))
    return header, placed + [row for row in new if _figure(row) not in at]


if __name__ == "__main__":
    main()
