"""The promotion history and rollbacks of latest.json (tasks/rollback.py), through promote itself.

The verify artifacts here are published by the artifact store with the metrics the verify stage writes
(verdict, successes, episodes, protocol, lineage); the real verify stage feeds promote end to end in
tests/tasks/test_train_verify.py. What is tested is what the registry does with them.
"""

from __future__ import annotations

import json

import pytest

from tasks.core.promotions import history
from tasks.core.store import ArtifactStore
from tasks.maintenance import MaintenanceParams, maintain
from tasks.promote import PromoteParams, promote
from tasks.rollback import RollbackError, RollbackParams, main, rollback
from tests.fixtures.promotions import ENV_ID
from tests.fixtures.promotions import verified as _verified


def test_promotions_are_recorded_and_rollback_restores_an_earlier_entry(local_root, capsys):
    store = ArtifactStore(local_root)
    a, b = _verified(store, "a", successes=4), _verified(store, "b", successes=10)
    assert promote(
        PromoteParams(env_id=ENV_ID, actor="airflow sft run-1"), root=local_root, verification=a["verify"]
    ).metrics["promoted"]
    assert promote(
        PromoteParams(env_id=ENV_ID, actor="airflow sft run-2"), root=local_root, verification=b["verify"]
    ).metrics["promoted"]
    records = history(store, ENV_ID)
    assert [(r["action"], r["by"], r["entry"]["checkpoint"]) for r in records] == [
        ("promote", "airflow sft run-2", b["checkpoint"]),
        ("promote", "airflow sft run-1", a["checkpoint"]),
    ]
    assert records[0]["replaced"]["checkpoint"] == a["checkpoint"] and records[1]["replaced"] is None
    assert records[0]["entry"]["success_rate"] == 1.0 and records[0]["at"] >= records[1]["at"]

    # Back to what the current latest replaced (b replaced a), recorded with the CLI's user@host.
    done = rollback(RollbackParams(env_id=ENV_ID), root=local_root)
    latest = store.read_json(f"{local_root}/{ENV_ID}/latest.json")
    assert done.metrics["latest_checkpoint"] == latest["checkpoint"] == a["checkpoint"]
    assert latest["rolled_back_from"] == b["verify"] and latest["previous"] == b["checkpoint"]
    newest = history(store, ENV_ID)[0]
    assert newest["action"] == "rollback" and "@" in newest["by"] and newest["replaced"]["verify"] == b["verify"]

    # Forward again by naming the entry; an unknown one is refused with the known ones.
    assert (
        rollback(RollbackParams(env_id=ENV_ID, to=b["verify"]), root=local_root).metrics["latest_verify"] == b["verify"]
    )
    with pytest.raises(RollbackError, match=r"is in no promotion record; the history has the verify artifacts \["):
        rollback(RollbackParams(env_id=ENV_ID, to=f"{local_root}/{ENV_ID}/verify/nope"), root=local_root)

    # The CLI lists the history, newest first.
    capsys.readouterr()
    assert main(["history", "--env-id", ENV_ID, "--root", local_root]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["action"] for line in lines] == ["rollback", "rollback", "promote", "promote"]

    # Retention keeps what the records name; a checkpoint removed anyway cannot be rolled back to.
    swept = maintain(MaintenanceParams(keep_runs=5, grace_hours=0, dry_run=False), root=local_root).metrics
    assert swept["removed"] == [] and store.read_manifest(a["checkpoint"]) is not None
    store.remove(a["checkpoint"])
    with pytest.raises(RollbackError, match="no longer in the store"):
        rollback(RollbackParams(env_id=ENV_ID, to=a["verify"]), root=local_root)


def test_rollback_without_a_latest_or_an_earlier_entry_says_so(local_root):
    with pytest.raises(RollbackError, match="no latest to roll back from"):
        rollback(RollbackParams(env_id=ENV_ID), root=local_root)
    store = ArtifactStore(local_root)
    only = _verified(store, "only", successes=6)
    promote(PromoteParams(env_id=ENV_ID), root=local_root, verification=only["verify"])
    with pytest.raises(RollbackError, match="it was the first promotion"):
        rollback(RollbackParams(env_id=ENV_ID), root=local_root)
