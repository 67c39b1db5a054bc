"""The Airflow UI in a real browser (Debian Chromium through Selenium) against the loopback deployment's api-server.

What a new user does first: open the DAG, open the trigger form, read it, trigger with the defaults or with
edits; a bad value must fail the run at once; the backfill form picks tasks from the registry. Screenshots of
the form and the graph are saved as test artifacts (PIPELINE_TEST_ARTIFACTS, else the test's temp dir).
"""

import os
import time
from pathlib import Path

import pytest

from tasks.core.params import PRESETS
from tasks.core.run_config import SECTIONS, RunConfig
from tasks.core.specs import TASK_SPECS
from tests.fixtures.browser import AirflowUI, chromium_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian chromium + chromium-driver (tools/setup_system.sh)"),
]
SFT = "maniskill_openpi_sft"
BACKFILL = "maniskill_openpi_backfill"


@pytest.fixture(scope="module")
def ui(deployment):
    browser = AirflowUI(deployment.api)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    path = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS") or tmp_path_factory.mktemp("ui-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_ids(dep, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in dep.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]}


def new_run(dep, dag_id: str, before: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [
            r
            for r in dep.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
            if r["dag_run_id"] not in before
        ]
        if runs:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"the Trigger button started no run of {dag_id}")


def wait_task(dep, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    ti = {}
    while time.monotonic() < deadline:
        ti = dep.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti["state"] in states:
            return ti
        time.sleep(2)
    raise AssertionError(f"{task_id} of {run_id} is {ti.get('state')}, not one of {states}:\n{dep.tail('scheduler')}")


def stop_run(dep, dag_id: str, run_id: str) -> None:
    """Ends a run the test has seen enough of (the pipeline itself is tested by test_integration.py)."""
    import urllib.error

    for attempt in range(5):
        try:
            dep.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
            return
        except urllib.error.HTTPError as e:
            # Airflow's API can lose a Postgres deadlock against the scheduler updating the same dag_run row (seen:
            # "deadlock detected" on UPDATE dag_run, answered 500); the loser's transaction was rolled back, so the
            # request is safe to repeat.
            if e.code != 500 or attempt == 4:
                raise
            time.sleep(2)


def test_trigger_form_reads_as_the_run_config_and_triggers_with_its_defaults(ui, artifacts):
    ui.open_trigger_form(SFT)
    assert ui.sections() == [*SECTIONS, "Advanced Options"]
    seen = {}
    for section in SECTIONS:
        ui.open_section(section)
        fields = ui.fields()
        assert fields, section
        for name, field in fields.items():
            meta = next(f.metadata for f in RunConfig.settings() if f.name == name)
            assert field["label"] == meta["title"] and meta["section"] == section, (name, field)
        seen.update(fields)
        if section == "Training":
            ui.screenshot(artifacts / "trigger-form-training.png")
    assert set(seen) == set(RunConfig.setting_names())
    # choices are dropdowns; optional settings are optional (a cleared field is null, not "missing")
    assert {n for n, f in seen.items() if f["kind"] == "select"} == {
        "env_id",
        "demo_source",
        "control_mode",
        "model",
        "preset",
    }
    ui.open_section("Training")
    assert ui.options("preset") == list(PRESETS) and ui.options("model") == ["pi0", "pi0.5"]  # values_display
    assert not any(
        seen[n]["required"]
        for n in (
            "steps",
            "batch_size",
            "pretrained_uri",
            "demo_source_uri",
            "eval_max_steps",
            "s3_conn_id",
            "wandb_conn_id",
        )
    )
    assert seen["preset"]["value"] == "tiny" and seen["steps"]["value"] == "4"  # the deployment's (demo) profile
    assert ui.trigger_button().is_enabled()


def test_a_run_triggered_with_edited_fields_carries_them_and_starts(deployment, ui, tmp_path):
    before = run_ids(deployment, SFT)
    ui.open_trigger_form(SFT)
    ui.open_section("Task and demos")
    ui.set_text("demo_count", 2)
    ui.open_section("Evaluation")
    ui.set_text("eval_episodes", 1)
    ui.open_section("Storage and accounts")
    ui.set_text("artifact_root", f"file://{tmp_path / 'artifacts'}")
    ui.trigger_button().click()
    run = new_run(deployment, SFT, before)
    try:
        assert run["conf"]["demo_count"] == 2 and run["conf"]["eval_episodes"] == 1
        assert run["conf"]["steps"] == 4 and run["conf"]["pretrained_uri"] is None  # untouched defaults, cleared = null
        resolved = wait_task(deployment, SFT, run["dag_run_id"], "resolve", {"success", "failed"})
        assert resolved["state"] == "success", deployment.tail("cpu-worker")
    finally:
        stop_run(deployment, SFT, run["dag_run_id"])


def test_a_bad_value_fails_the_run_at_once_with_the_message_in_the_log(deployment, ui):
    before = run_ids(deployment, SFT)
    ui.open_trigger_form(SFT)
    ui.open_section("Task and demos")
    ui.choose("demo_source", "s3")  # a valid choice, but no demo folder given
    ui.trigger_button().click()
    run = new_run(deployment, SFT, before)
    ti = wait_task(deployment, SFT, run["dag_run_id"], "resolve", {"success", "failed", "up_for_retry"}, timeout=300)
    assert ti["state"] == "failed" and ti["try_number"] == 1, ti  # no retries for bad input
    log = deployment.request("GET", f"/api/v2/dags/{SFT}/dagRuns/{run['dag_run_id']}/taskInstances/resolve/logs/1")
    assert "source=s3 needs source_uri" in str(log)
    deadline = time.monotonic() + 60
    while deployment.request("GET", f"/api/v2/dags/{SFT}/dagRuns/{run['dag_run_id']}")["state"] != "failed":
        assert time.monotonic() < deadline, "the run did not fail after resolve failed"
        time.sleep(2)


def test_backfill_form_picks_tasks_from_the_registry(deployment, ui, tmp_path):
    before = run_ids(deployment, BACKFILL)
    ui.open_trigger_form(BACKFILL)
    ui.open_section("Task and demos")
    assert ui.fields()["env_ids"]["kind"] == "select" and not ui.fields()["env_ids"]["required"]
    assert ui.options("env_ids") == sorted(TASK_SPECS)
    ui.choose("env_ids", "PickCube-v1", "PushCube-v1")
    ui.open_section("Storage and accounts")
    ui.set_text("artifact_root", f"file://{tmp_path / 'artifacts'}")
    assert ui.trigger_button().is_enabled()
    ui.trigger_button().click()
    run = new_run(deployment, BACKFILL, before)
    try:
        assert run["conf"]["env_ids"] == ["PickCube-v1", "PushCube-v1"]
        chosen = wait_task(deployment, BACKFILL, run["dag_run_id"], "registered_tasks", {"success", "failed"})
        assert chosen["state"] == "success"
        xcom = deployment.request(
            "GET",
            f"/api/v2/dags/{BACKFILL}/dagRuns/{run['dag_run_id']}/taskInstances/"
            "registered_tasks/xcomEntries/return_value",
        )
        assert xcom["value"] == ["PickCube-v1", "PushCube-v1"]
    finally:
        stop_run(deployment, BACKFILL, run["dag_run_id"])


def test_graph_reads_as_the_pipeline(ui, artifacts):
    ui.show_graph(SFT)
    nodes = ui.driver.execute_script(
        "return [...document.querySelectorAll('.react-flow__node')].map(n => n.getAttribute('data-id'))"
    )
    assert {
        "resolve",
        "download",
        "shards",
        "render",
        "convert",
        "convert_holdout",
        "stats",
        "train",
        "candidates",
        "verify",
        "select",
        "confirm",
        "approve",
        "promote",
        "report",
    } <= set(nodes)
    edges = ui.driver.execute_script("return document.querySelectorAll('.react-flow__edge').length")
    # the data flow only (17) and confirm -> approve -> promote: no fan-out from resolve, no fan-in to report
    assert edges == 19
    ui.screenshot(artifacts / "graph.png")
