"""Benchmark: ACDC circuit extraction of both tasks, and tracing of all 256 rows.

    .venv/bin/python scripts/bench_extract.py [--device auto|cpu|cuda]

Trains the paper-size model (1 head, block granularity) and the 2-head model
(head granularity) with seed 0, then times `farm.discovery.acdc.extract` per task: the
whole threshold sweep plus the exact confirmation of the chosen circuit. Then
records the exact branch trace of every domain row to Parquet and reads it
back. Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from farm.discovery.acdc import extract
from farm.model.circuit import Granularity
from farm.model.exact import ExactModel
from farm.model.gpt import GPTConfig
from farm.model.tracing import TraceReader, record_traces
from farm.model.train import TrainConfig, train
from farm.tasks.registry import DEFAULT_TASKS, domain_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    configs: list[tuple[str, GPTConfig, Granularity]] = [
        ("1 head", GPTConfig(), "block"), ("2 heads", GPTConfig(n_heads=2), "head")]
    print("| model | granularity | task | edges kept / full | threshold | float64 agr. | "
          "exact agr. | exact min margin | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    trace_model = None
    for name, cfg, granularity in configs:
        model = train(cfg, TrainConfig(seed=0), progress=False).model
        trace_model = trace_model or model
        total = 0.0
        for task in DEFAULT_TASKS:
            r = extract(model, task, granularity, device=args.device)
            total += r.seconds
            print(f"| {name} | {granularity} | {task} | {len(r.circuit.edges)} / "
                  f"{r.full_edges} | {r.circuit.metadata['threshold']} | "
                  f"{r.float_agreement:.0%} | {r.exact_agreement:.0%} | "
                  f"{r.exact_min_margin:.4f} | {r.seconds:.2f} |")
        print(f"| {name} | {granularity} | both | | | | | | {total:.2f} |")

    prompts = [r.prompt for r in domain_rows()]
    weights = {k: v.detach().numpy() for k, v in trace_model.state_dict().items()}
    exact = ExactModel(trace_model.cfg, weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.parquet"
        start = time.perf_counter()
        table = record_traces(exact, prompts, path)
        recorded = time.perf_counter() - start
        start = time.perf_counter()
        reader = TraceReader(path)
        traces = [reader.trace(i) for i in range(len(reader))]
        read = time.perf_counter() - start
        same = traces == [r.trace for r in exact.run(prompts)]
        print(f"\ntrace of {len(prompts)} rows (1 head): {table.num_rows} records, "
              f"{path.stat().st_size} bytes; record (exact run + write) {recorded:.2f} s, "
              f"read back {read:.2f} s, equal to RowResult.trace: {same}")


if __name__ == "__main__":
    main()
