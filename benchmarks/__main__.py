"""Run every benchmark, print the table and write benchmarks/results/latest.md."""

from __future__ import annotations

import argparse
import datetime
import importlib

from benchmarks.common import RESULTS, machine

MODULES = ["startup", "claims", "heartbeats", "seed_queries", "training", "dashboard_load", "pages", "foreground", "workloads"]


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
    header = [
        "# AI Farm benchmarks",
        "",
        f"Machine: {machine()}",
        f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC{' (quick sizes)' if args.quick else ''}",
        "",
        "| figure | value | target | status | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(header + rows) + "\n")
    print(f"written to {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
