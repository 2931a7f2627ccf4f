"""Scaling benchmark of the Ray farm (farm/commands/bench_scale.py); see docs/BENCHMARKS.md."""

from farm.commands.bench_scale import main

if __name__ == "__main__":
    raise SystemExit(main())
