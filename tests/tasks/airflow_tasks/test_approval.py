"""The human approval before latest moves: Airflow's HITL step between confirm and promote, through dag.test().

The DAG here is the SFT DAG's tail (the real `resolve`, `approve` and `promote` tasks of
tasks/airflow_tasks/stage_tasks.py); its `confirm` task hands over a verification published in the test, as in
tests/tasks/test_rollback.py, because a tiny CPU model never passes the success floor that makes a candidate
promotable. A person answers through Airflow's own REST API (the Core API app, in process, on the same
metadata DB), as the Required Actions page does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import PROJECT
from tests.fixtures.promotions import ENV_ID
from tests.fixtures.promotions import verified as _verified


@pytest.fixture(scope="module")
def airflow_db():
    sys.path.insert(0, str(PROJECT / "plugins"))
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": f"{PROJECT}:{PROJECT / 'plugins'}"},
    )
    yield


# A DAG file of its own bundle (dag.test runs only DAGs that a bundle holds): the SFT DAG's tail.
APPROVAL_DAG = """
import os

import pendulum
from airflow.sdk import dag, task

from tasks.airflow_tasks import stage_tasks as t
from tasks.airflow_tasks.params import run_params


@dag(dag_id="approval_tail", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), params=run_params())
def approval_tail():
    @task(task_id="confirm")
    def confirm() -> dict:  # stands in for the selected checkpoint's verification: its result, published by the test
        return {"uri": os.environ["APPROVAL_TEST_VERIFICATION"]}

    config = t.resolve()
    checked = confirm()
    config >> checked
    promotion = t.promote(checked)
    checked >> t.approve() >> promotion


approval_tail()
"""


@pytest.fixture(scope="module")
def approval_dag(airflow_db, tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path_factory.mktemp("approval_bundle")
    (folder / "approval_tail.py").write_text(APPROVAL_DAG)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
        [
            {"name": "dags-folder", "classpath": local, "kwargs": {}},
            {"name": "approval-test", "classpath": local, "kwargs": {"path": str(folder), "refresh_interval": 0}},
        ]
    )
    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    yield bag.dags["approval_tail"]
    del os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"]


def run_tail(dag, verification: str, conf: dict):
    os.environ["APPROVAL_TEST_VERIFICATION"] = verification
    return dag.test(run_conf=conf)


def answer_when_asked(dag_id: str, option: str, answers: list, timeout_s: float = 120) -> threading.Event:
    """A person: waits for the approve task to park in awaiting_input, then answers through the REST API.
    Returns the event that sends them away (once their run is over, so that they answer no later run)."""
    gone = threading.Event()

    def respond():
        from airflow.api_fastapi.app import create_app
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from fastapi.testclient import TestClient

        client = TestClient(create_app())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not gone.is_set():
            with create_session() as session:
                row = (
                    session.query(TaskInstance, HITLDetail)
                    .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
                    .filter(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.task_id == "approve",
                        TaskInstance.state == "awaiting_input",
                    )
                    .first()
                )
                if row is not None:
                    ti, detail = row
                    answers.append({"subject": detail.subject, "body": detail.body, "options": detail.options})
                    response = client.patch(
                        f"/api/v2/dags/{dag_id}/dagRuns/{ti.run_id}/taskInstances/approve/-1/hitlDetails",
                        json={"chosen_options": [option], "params_input": {}},
                    )
                    answers.append(response.status_code)
                    return
            time.sleep(0.5)

    threading.Thread(target=respond, daemon=True).start()
    return gone


def _conf(root: str, **extra) -> dict:
    return {"env_id": ENV_ID, "artifact_root": root, "s3_conn_id": None, **extra}


def test_approval_is_asked_only_when_required_and_an_approval_moves_latest(approval_dag, tmp_path):
    from tasks.core.promotions import history
    from tasks.core.store import ArtifactStore

    root = f"file://{tmp_path}/store"
    store = ArtifactStore(root)
    first, second, weaker = (_verified(store, tag, successes=n) for tag, n in (("a", 4), ("b", 10), ("c", 3)))

    # Not required: approve returns at once and promote moves latest by the rule alone.
    run = run_tail(approval_dag, first["verify"], _conf(root))
    assert run.state == "success"
    assert store.read_json(f"{root}/{ENV_ID}/latest.json")["checkpoint"] == first["checkpoint"]

    # Required, and the rule would promote (10/10 beats 4/10): a person is asked; an Approve moves latest.
    answers: list = []
    person = answer_when_asked(approval_dag.dag_id, "Approve", answers)
    run = run_tail(approval_dag, second["verify"], _conf(root, require_approval=True))
    person.set()
    assert run.state == "success" and answers[1] == 200, answers
    asked = answers[0]
    assert asked["options"] == ["Approve", "Reject"] and "10/10" in asked["subject"]
    assert first["checkpoint"] in asked["body"] and second["checkpoint"] in asked["body"]  # incumbent beside candidate
    latest = store.read_json(f"{root}/{ENV_ID}/latest.json")
    assert latest["checkpoint"] == second["checkpoint"] and latest["approved_by"]
    assert history(store, ENV_ID)[0]["entry"]["approved_by"] == latest["approved_by"]

    # Required, but the rule refuses (3/10 does not beat 10/10): nobody is asked, latest stays.
    answers = []
    person = answer_when_asked(approval_dag.dag_id, "Reject", answers)  # were it asked, the run must not hang
    run = run_tail(approval_dag, weaker["verify"], _conf(root, require_approval=True))
    person.set()
    assert run.state == "success" and not answers
    assert store.read_json(f"{root}/{ENV_ID}/latest.json")["checkpoint"] == second["checkpoint"]


def test_a_rejection_keeps_latest_and_says_who_rejected(approval_dag, tmp_path):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tasks.core.store import ArtifactStore

    root = f"file://{tmp_path}/store"
    store = ArtifactStore(root)
    candidate = _verified(store, "a", successes=4)
    answers: list = []
    person = answer_when_asked(approval_dag.dag_id, "Reject", answers)
    run = run_tail(approval_dag, candidate["verify"], _conf(root, require_approval=True))
    person.set()
    assert run.state == "success" and answers[1] == 200, answers
    assert store.read_json(f"{root}/{ENV_ID}/latest.json") is None
    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, key="return_value", dag_ids=approval_dag.dag_id, task_ids=["approve", "promote"]
            )
        ).all()
        results = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    assert results["approve"]["asked"] and not results["approve"]["approved"]
    metrics = results["promote"]["metrics"]
    assert not metrics["promoted"] and metrics["rejected_by"] == results["approve"]["by"]
    assert metrics["reason"].startswith(f"rejected by {metrics['rejected_by']}")
