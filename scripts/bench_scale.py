"""Scaling benchmark of the Ray farm (see farm/bench_scale.py); results in docs/BENCHMARKS.md."""

from farm.bench_scale import main

if __name__ == "__main__":
    raise SystemExit(main())
