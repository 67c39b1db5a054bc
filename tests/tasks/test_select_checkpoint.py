"""Checkpoint selection by closed-loop success (tasks/select_checkpoint.py) on verify artifacts of one training run.

The verify artifacts here are published by the artifact store with the metrics the verify stage writes
(checkpoint step, successes, validation loss at the step, protocol, lineage), so that which checkpoint is
better is known by construction; the real verify stage feeds select end to end in tests/tasks/test_train_verify.py
and in the DAG tests.
"""

from __future__ import annotations

import json

import pytest

from tasks.core.stage import run_stage
from tasks.core.store import ArtifactStore
from tasks.select_checkpoint import SelectError, SelectParams, choose, main, select
from tests.fixtures.promotions import ENV_ID, PROTOCOL


def _train(store: ArtifactStore, tag: str = "run"):
    def build(out):
        (out / "params.bin").write_text(tag)
        return {"steps": 3000, "checkpoint_steps": [1000, 2000, 3000]}

    return run_stage(
        store, env_id=ENV_ID, stage="train", code_version="t", params={"tag": tag}, parents=[], build=build
    )


def _verified(
    store: ArtifactStore,
    ckpt,
    step: int,
    successes: int,
    val_loss: float | None,
    verdict: str = "unchecked",
    protocol: dict | None = None,
) -> str:
    def build(out):
        (out / "report.html").write_text(str(step))
        return {
            "verdict": verdict,
            "verdict_reason": "test",
            "successes": successes,
            "episodes": 10,
            "success_rate": successes / 10,
            "success_rate_ci95": [0.0, 1.0],
            "protocol": protocol or PROTOCOL,
            "checkpoint_step": step,
            "val_loss_at_step": val_loss,
            "lineage": {
                "checkpoint": ckpt.uri,
                "step": step if step != 3000 else None,
                "checkpoint_ref": f"{ckpt.uri}@{step}" if step != 3000 else ckpt.uri,
            },
        }

    tag = {"step": step, "successes": successes, "val_loss": val_loss, "verdict": verdict, "protocol": protocol}
    return run_stage(
        store,
        env_id=ENV_ID,
        stage="verify",
        code_version="t",
        params={"tag": json.dumps(tag)},
        parents=[store.require(ckpt.uri)],
        build=build,
    ).uri


def _row(step, successes, val_loss, verdict="unchecked"):
    return {"step": step, "successes": successes, "episodes": 10, "val_loss": val_loss, "verdict": verdict}


def test_more_successes_win_over_a_lower_loss_and_the_last_step():
    best, reason = choose([_row(1000, 3, 0.10), _row(2000, 7, 0.30), _row(3000, 5, 0.05)])
    assert best["step"] == 2000 and "by successes" in reason and "ahead of step 3000" in reason


def test_equal_successes_go_to_the_lower_validation_loss_then_the_later_step():
    assert choose([_row(1000, 4, 0.20), _row(2000, 4, 0.10), _row(3000, 4, 0.30)])[0]["step"] == 2000
    best, reason = choose([_row(1000, 4, 0.2), _row(2000, 4, 0.2)])
    assert best["step"] == 2000 and "later step" in reason
    assert choose([_row(1000, 4, None), _row(2000, 4, 0.9)])[0]["step"] == 2000  # a missing loss ranks last


def test_a_failed_verdict_ranks_behind_any_other():
    best, reason = choose([_row(1000, 9, 0.1, verdict="failed"), _row(2000, 6, 0.2, verdict="passed")])
    assert best["step"] == 2000 and "by verdict" in reason


def test_select_publishes_the_best_checkpoint_with_its_table_and_figure(local_root, capsys, tmp_path):
    store = ArtifactStore(local_root)
    ckpt = _train(store)
    uris = [
        _verified(store, ckpt, 1000, 2, 0.4),
        _verified(store, ckpt, 2000, 6, 0.5),
        _verified(store, ckpt, 3000, 6, 0.3),
    ]
    result = select(SelectParams(env_id=ENV_ID), root=local_root, verifications=list(reversed(uris)))
    assert (
        result.metrics["verify"] == uris[2]
        and result.metrics["step"] == 3000
        and result.metrics["checkpoint"] == ckpt.uri
    )
    assert [c["step"] for c in result.metrics["candidates"]] == [1000, 2000, 3000]  # ordered by step
    _, folder = store.fetch(result.uri, tmp_path)
    table = json.loads((folder / "selection.json").read_text())
    assert [c["selected"] for c in table["candidates"]] == [False, False, True] and "validation loss" in table["reason"]
    assert (folder / "selection.png").read_bytes()[:4] == b"\x89PNG"
    assert set(store.require(result.uri).parents) == set(uris)  # retention keeps what the selection was made from
    # same verifications, same artifact; the CLI takes them too
    assert main(["--root", local_root, "--env-id", ENV_ID, "--verifications", *uris]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cache_hit"]


def test_verifications_that_cannot_be_compared_are_refused(local_root):
    store = ArtifactStore(local_root)
    ckpt, other = _train(store), _train(store, "other run")
    a = _verified(store, ckpt, 1000, 2, 0.4)
    with pytest.raises(SelectError, match="one training run"):
        select(SelectParams(env_id=ENV_ID), root=local_root, verifications=[a, _verified(store, other, 2000, 3, 0.2)])
    longer = _verified(store, ckpt, 2000, 3, 0.2, protocol={**PROTOCOL, "max_steps": 300})
    with pytest.raises(SelectError, match="another protocol.*max_steps"):
        select(SelectParams(env_id=ENV_ID), root=local_root, verifications=[a, longer])
    twice = _verified(store, ckpt, 1000, 5, 0.1)
    with pytest.raises(SelectError, match="more than once"):
        select(SelectParams(env_id=ENV_ID), root=local_root, verifications=[a, twice])
    with pytest.raises(ValueError, match="is a train artifact; this takes a verify artifact"):
        select(SelectParams(env_id=ENV_ID), root=local_root, verifications=[ckpt.uri])
    with pytest.raises(SelectError, match="no verifications"):
        select(SelectParams(env_id=ENV_ID), root=local_root, verifications=[])


def test_latest_moves_between_steps_of_one_run_and_rolls_back_to_the_earlier_step(local_root):
    """Two kept checkpoints of one training run share their train artifact: latest, the history and a rollback tell
    them apart by their verification and step."""
    from tasks.core.store import latest_uri
    from tasks.promote import PromoteParams, promote
    from tasks.rollback import RollbackParams, rollback

    store = ArtifactStore(local_root)
    ckpt = _train(store)
    early, late = (
        _verified(store, ckpt, 1000, 2, 0.4, verdict="passed"),
        _verified(store, ckpt, 3000, 9, 0.2, verdict="passed"),
    )
    for uri in (early, late):
        assert promote(PromoteParams(env_id=ENV_ID), root=local_root, verification=uri).metrics["promoted"]
    latest = store.read_json(latest_uri(store, ENV_ID))
    assert (latest["verify"], latest["step"], latest["previous_verify"]) == (late, None, early)
    rollback(RollbackParams(env_id=ENV_ID), root=local_root)
    latest = store.read_json(latest_uri(store, ENV_ID))
    assert (latest["verify"], latest["step"], latest["checkpoint_ref"]) == (early, 1000, f"{ckpt.uri}@1000")
