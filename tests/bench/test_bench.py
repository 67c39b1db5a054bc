"""Every benchmark in bench/ runs at a smoke size, so none rots unnoticed (they measure nothing here).

Each runs as a user runs it (`python -m bench.<name> <size>`), with its data under a private
PIPELINE_BENCH_OUT, and must print its side-by-side result and append it to results.jsonl. The real
figures come from `bench/run_all.sh` and are recorded in docs/benchmarks.md.

The smokes cost a quarter of the suite (each benchmark plans, renders and trains its own data in a fresh
process), so they are a tier of their own, `bench`, which `tools/test.sh` runs only when asked
(`tools/test.sh -m bench`): they guard scripts, not the product. P7, the closed-loop evaluation benchmark, runs
in the default set (marker `sim` only), since it also drives verify's batched rollouts on a trained checkpoint.
P4 (tasks.flows.pipeline vs the demo DAG run) has no smoke: both its entry points run in tests/dags/test_dags.py, on the
SFT run's store.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_out")


def run_bench(name: str, *args: int, out) -> list[dict]:
    env = {**os.environ, "PIPELINE_BENCH_OUT": str(out)}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *map(str, args)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"bench.{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "name, args, title",
    [
        pytest.param("bench_render", (2,), "P1 render", marks=pytest.mark.bench),
        pytest.param("bench_convert", (2,), "P2 convert", marks=pytest.mark.bench),
        pytest.param("bench_stats", (2,), "P3 norm stats", marks=pytest.mark.bench),
        pytest.param("bench_train", (2, 1), "P6 training throughput", marks=pytest.mark.bench),
        pytest.param("bench_tiny_model", (1, 1), "T1 tiny model", marks=pytest.mark.bench),
        # evaluates bench_train's checkpoint when that ran first, else trains a one-step one itself
        pytest.param(
            "bench_eval", (3, 2, 2, 5), "P7 closed-loop evaluation", marks=[pytest.mark.bench, pytest.mark.train]
        ),
    ],
)
def test_ratio_benchmarks_run_at_smoke_size(name, args, title, bench_out):
    results = run_bench(name, *args, out=bench_out)
    mine = [r for r in results if r["name"].startswith(title)]
    assert mine and mine[-1]["ratio"] > 0 and all(row[1] >= 0 for row in mine[-1]["rows"])


@pytest.mark.bench
def test_memory_benchmark_runs_at_smoke_size(bench_out):
    results = run_bench("bench_memory", 2, 4, 2, out=bench_out)
    memory = [r for r in results if r["name"] == "memory"][-1]
    assert memory["convert"]["ratio"] > 0 and memory["stats"]["ratio"] > 0
