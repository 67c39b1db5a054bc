"""Shared set-up for the benchmarks: real demos and rendered shards made once under bench/out/."""

from __future__ import annotations

import json
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path

# PIPELINE_BENCH_OUT: where the smoke runs in the test suite keep their data, apart from real measurements.
OUT = Path(os.environ.get("PIPELINE_BENCH_OUT") or Path(__file__).resolve().parent / "out")
ENV_ID = "PickCube-v1"


def store_root(name: str) -> str:
    path = OUT / name
    path.mkdir(parents=True, exist_ok=True)
    return f"file://{path}"


def demos(count: int, seed: int = 0):
    from tasks.download import DownloadParams, download

    return download(DownloadParams(env_id=ENV_ID, count=count, seed=seed), root=store_root("store"))


def rendered(count: int):
    from tasks.render import RenderParams, render

    d = demos(count)
    return render(RenderParams(env_id=ENV_ID), root=store_root("store"), demos=d.uri)


def local(result) -> Path:
    """The folder holding a local artifact's files (its payload folder, which the manifest names)."""
    return Path(result.files_uri[len("file://") :])


@contextmanager
def timer():
    box = {}
    t0 = time.perf_counter()
    yield box
    box["s"] = time.perf_counter() - t0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, rows: list[tuple[str, float, str]], ratio: float, goal: float) -> dict:
    print(f"\n{name}")
    for label, value, unit in rows:
        print(f"  {label:<48} {value:10.2f} {unit}")
    print(f"  {'ratio (ours / upstream)':<48} {ratio:10.2f} x   (goal >= {goal} x)")
    result = {"name": name, "rows": rows, "ratio": ratio, "goal": goal, "cpus": os.cpu_count()}
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result
