"""The pipeline without a deployment, both ways, on one store: `python -m tasks.pipeline` (the stage functions
called in order) and the demo runner (plugins/demo_run.py, what tools/demo.sh runs: the SFT DAG through
`dag.test()`).

The direct run builds every artifact; the DAG run on the same root then finds each one (same run config, same
shard plan, same keys): every stage is a cache hit and only the run report is written again. So a stage debugged
by hand with tasks.pipeline is the stage the DAG runs, and neither entry point can rot unnoticed. (bench/
bench_overhead.py times the two on separate stores, P4 in docs/benchmarks.md.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

pytestmark = [pytest.mark.sim, pytest.mark.train]
# 2 training demos (with one, the goal never varies and stats rightly refuses it), open-loop verify only
SETTINGS = {"demo_count": 2, "holdout_count": 1, "steps": 2, "eval_episodes": 0, "holdout_frames": 1}


def test_the_direct_pipeline_and_the_demo_dag_run_share_every_artifact(tmp_path):
    root = (tmp_path / "store").as_uri()
    sets = [arg for k, v in SETTINGS.items() for arg in ("--set", f"{k}={v}")]
    direct = subprocess.run([sys.executable, "-m", "tasks.pipeline", "--profile", "demo", "--env-id", "PickCube-v1",
                             "--root", root, *sets], cwd=PROJECT, capture_output=True, text=True, timeout=1800)
    assert direct.returncode == 0, direct.stdout[-3000:] + direct.stderr[-3000:]
    built = json.loads(direct.stdout[direct.stdout.rindex("\n{") + 1:])
    # promote does not move latest (unchecked), and confirm is the one verification already made (one checkpoint kept)
    assert not any(r["cache_hit"] for name, r in built.items() if name not in ("confirm", "promote", "report"))
    assert built["confirm"]["cache_hit"] and built["confirm"]["uri"] == built["verify[0]"]["uri"]
    assert "verification UNCHECKED" in direct.stdout and "run report:" in direct.stdout

    confs = [arg for k, v in SETTINGS.items() for arg in ("--conf", f"{k}={v}")]
    summary_path = tmp_path / "summary.json"
    via_dag = subprocess.run([sys.executable, "plugins/demo_run.py", "--env-id", "PickCube-v1", "--root", root, *confs,
                              "--json", str(summary_path)], cwd=PROJECT, capture_output=True, text=True, timeout=1800)
    assert via_dag.returncode == 0, via_dag.stdout[-3000:] + via_dag.stderr[-3000:]
    tasks = json.loads(summary_path.read_text())["tasks"]
    assert all(r["state"] == "success" for r in tasks.values()), tasks
    stages = {name: r for name, r in tasks.items() if r["cache_hit"] is not None and name != "report"}
    assert {name.split("[")[0] for name in stages} == {"download", "render", "convert", "convert_holdout", "stats",
                                                       "train", "verify", "select", "confirm", "promote"}
    assert all(r["cache_hit"] for r in stages.values()), {n: r["cache_hit"] for n, r in stages.items()}
    assert tasks["train"]["uri"] == built["train"]["uri"] and tasks["confirm"]["uri"] == built["confirm"]["uri"]
    assert "checkpoint selection: one checkpoint evaluated" in via_dag.stdout and "run report:" in via_dag.stdout
