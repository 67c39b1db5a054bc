"""Per-task tier (`tasks` marker, opt-in): every registered ManiSkill task through the data stages, and `derive` on a
task left out; in the default tier every registered spec is checked against its env.

For each task in the registry (PickCube and PushCube: in the DAG tests) two planner demos go download -> render ->
convert -> stats (each render worker first checks the spec against the env: cameras, RGB-mode state keys, widths,
action width, fps), giving a LeRobot dataset whose features are the spec's and norm stats the stats stage accepts.
`tools/task_coverage.py` writes docs/tasks.md from the same rows. The tier costs ~8 minutes on 2 cores, so
`tools/test.sh` runs it when asked (`tools/test.sh -m tasks`) and after a spec is added or changed; the default
tier keeps the spec-against-env check of every registered task.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.core.specs import TASK_SPECS, SpecError, get_spec
from tasks.core.store import ArtifactStore
from tasks.flows.task_specs import coverage_row, derive

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> str:
    """One store for the module: derive's demos and renders of LiftPegUpright are the coverage row's (cache hits)."""
    return tmp_path_factory.mktemp("task_store").as_uri()


# PickCube and PushCube go through every stage, training and verify included, in tests/dags/test_dags.py (the SFT and
# backfill runs); this tier covers the other registered tasks, which nothing else plans and renders.
COVERED_BY_DAG_TESTS = ("PickCube-v1", "PushCube-v1")


@pytest.mark.tasks
@pytest.mark.parametrize("env_id", [e for e in sorted(TASK_SPECS) if e not in COVERED_BY_DAG_TESTS])
def test_registered_task_goes_from_planner_demos_to_norm_stats(env_id, store_root, tmp_path):
    """Also the spec check at registration: each render worker checks the spec against the env before rendering."""
    spec = get_spec(env_id)
    row = coverage_row(env_id, root=store_root, demos=2)
    assert row["replay_success_ratio"] >= 0.5 and row["episodes"] >= 1 and row["frames"] > row["episodes"]
    assert 0 < row["planner_success_rate"] <= 1
    assert row["image_shape_chw"][0] == 3
    store = ArtifactStore(store_root)
    _, dataset = store.fetch(row["uris"]["convert"], tmp_path / "cache")
    features = json.loads((dataset / "meta" / "info.json").read_text())["features"]
    assert features["observation.state"]["shape"] == [spec.state_dim]
    assert features["action"]["shape"] == [spec.action_dim]
    assert {k for k in features if k.startswith("observation.images.")} == {
        f"observation.images.{sensor}" for sensor, _ in spec.cameras
    }
    _, norm = store.fetch(row["uris"]["stats"], tmp_path / "cache")
    stats = json.loads(next(norm.rglob("norm_stats.json")).read_text())["norm_stats"]
    assert len(stats["state"]["mean"]) >= spec.state_dim and np.all(np.isfinite(stats["state"]["std"]))


@pytest.mark.tasks
def test_derive_proposes_the_registered_spec_for_a_task_it_has_not_seen(store_root, monkeypatch):
    env_id = "LiftPegUpright-v1"
    registered = TASK_SPECS[env_id]
    monkeypatch.delitem(TASK_SPECS, env_id)
    with pytest.raises(SpecError, match="unknown env id"):
        get_spec(env_id)
    derived = derive(env_id, demos=2, root=store_root)
    assert env_id not in TASK_SPECS  # derive registers nothing
    for field in ("cameras", "state_keys", "state_widths", "action_dim", "control_mode", "fps"):
        assert getattr(derived.spec, field) == getattr(registered, field), field
    code = derived.code()
    assert code.startswith("# ") and f"env_id={env_id!r}" in code and "the instruction" in code
    assert derived.facts["longest_episode"] == max(derived.facts["episode_lengths"]) > 0
    assert derived.facts["replay_success_ratio"] > 0


def test_check_lists_what_a_registered_spec_gets_wrong(monkeypatch, capsys):
    import dataclasses

    from tasks.flows.task_specs import main

    # every registered spec against its env (the default tier's check of the registry; the `tasks` tier above also
    # plans, renders, converts and computes stats for each)
    assert main(["check"]) == 0 and f"{len(TASK_SPECS)} specs checked, 0 with problems" in capsys.readouterr().out
    monkeypatch.setitem(TASK_SPECS, "PickCube-v1", dataclasses.replace(TASK_SPECS["PickCube-v1"], fps=30))
    assert main(["check", "PickCube-v1"]) == 1
    assert "fps is 30 but PickCube-v1 controls at 20 Hz" in capsys.readouterr().out
