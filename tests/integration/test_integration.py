"""Integration tier: the pipeline on a real Airflow deployment (tests/fixtures/deployment.py), surviving what
an operator meets, with compose's recovery settings.

Postgres and Redis from apt, api-server + scheduler + dag-processor + two Celery workers (queues `default`
and `gpu`), moto's S3 server over HTTP. One run is triggered through the REST API with a conf (the whole
pipeline costs minutes on CPU, so one run serves every check here) and suffers two faults, each the way it
happens in production:

1. Mid-render the CPU worker's container dies (SIGKILL to the worker's whole process tree, task processes
   included) and its restart policy starts a new one. The scheduler must notice the silent task within the
   heartbeat timeout that docker-compose.yaml sets (the deployment reads it from there) and retry it on the
   new worker.
2. Mid-train the scheduler crashes (SIGKILL) and comes back. The running training must go on untouched
   (adopted, not started again) and the run continue past it.

The run must still succeed, read from Airflow's own records: every task succeeded, GPU-queued tasks ran on
the gpu worker and nothing else did; every artifact is whole on S3: each key folder has its manifest, only
the payload it names (no half-written leftovers), files that match their hashes and parents that exist. No
credentials in the workers' environment: S3 and W&B are reached through Airflow connections.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import boto3
import pytest

from tasks.core.store import ArtifactStore
from tasks.maintenance import scan
from tests.fixtures.deployment import CONN_ID, WANDB_CONN_ID, WANDB_KEY, recovery_settings
from tests.fixtures.runs import SMALL_RUN_STAGES

pytestmark = [pytest.mark.integration, pytest.mark.sim, pytest.mark.train]
DAG_ID = "maniskill_openpi_sft"
BUCKET = "recovery"
HEARTBEAT_TIMEOUT = float(recovery_settings()["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])
RETRY_DELAY = 30.0  # the DAG's default_args (exponential backoff: up to twice that for the first retry)


def _tis(dep, run_id: str) -> list[dict]:
    return dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


def _wait_running(dep, run_id: str, task_id: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [t for t in _tis(dep, run_id) if t["task_id"] == task_id and t["state"] == "running"]
        if running:
            return running
        time.sleep(1)
    raise AssertionError(f"{task_id} never ran: {[(t['task_id'], t['state']) for t in _tis(dep, run_id)]}")


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def faulted_run(deployment, s3_endpoint) -> dict:
    dep = deployment
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    dep.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    conf = {
        "demo_count": 2,
        "holdout_count": 1,
        "episodes_per_shard": 1,
        "steps": 2,
        "eval_episodes": 1,
        "eval_max_steps": 10,
        "holdout_frames": 2,
        "artifact_root": f"s3://{BUCKET}/runs",
        "s3_conn_id": CONN_ID,
        "wandb": True,
        "wandb_conn_id": WANDB_CONN_ID,
    }
    run_id = dep.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    _wait_running(dep, run_id, "render", timeout=600)
    deadline = time.monotonic() + 120  # into the rendering proper: the render task has started its replay workers
    while (
        not any("tasks.sim.replay_worker" in cmd for cmd in dep.processes("cpu-worker")) and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    time.sleep(3)
    rendering = _wait_running(dep, run_id, "render", timeout=60)  # the ones running at the kill
    killed_at = dt.datetime.now(dt.UTC)
    killed_processes = dep.crash("cpu-worker")
    dep.restart("cpu-worker")

    training = _wait_running(dep, run_id, "train", timeout=900)
    time.sleep(8)
    scheduler_killed_at = dt.datetime.now(dt.UTC)
    dep.crash("scheduler")
    time.sleep(5)  # a restart policy's delay: the dead scheduler's job stops heartbeating
    dep.restart("scheduler")

    deadline = time.monotonic() + 1500
    state = "running"
    while time.monotonic() < deadline and state not in ("success", "failed"):
        time.sleep(5)
        state = dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
    tis = _tis(dep, run_id)
    logs = (
        f"\n--- scheduler ---\n{dep.tail('scheduler')}\n--- cpu ---\n{dep.tail('cpu-worker')}"
        f"\n--- gpu ---\n{dep.tail('gpu-worker')}"
    )
    summary = [(t["task_id"], t["map_index"], t["state"], t["try_number"]) for t in tis]
    assert state == "success", f"{summary}{logs}"
    return {
        "run_id": run_id,
        "tis": tis,
        "killed_at": killed_at,
        "killed_processes": killed_processes,
        "killed_renders": {t["map_index"] for t in rendering},
        "training": training[0],
        "scheduler_killed_at": scheduler_killed_at,
        "summary": summary,
        "logs": logs,
    }


def _assert_store_whole(root: str, cache) -> None:
    store = ArtifactStore(root)
    entries = scan(store)
    assert {e.stage for e in entries} == {"download", "render", "convert", "stats", "train", "verify", "select"}
    for e in entries:
        assert e.manifest is not None, f"{e.uri}: a key folder without its manifest"
        assert e.payloads == [e.manifest.payload], f"{e.uri}: leftover payloads {e.payloads}"
        store.fetch(e.uri, cache)  # downloads every file and checks it against the manifest's hash
        for parent in e.manifest.parents:
            assert store.read_manifest(parent) is not None, f"{e.uri}: parent {parent} is gone"


def test_a_worker_killed_mid_render_is_replaced_and_its_tasks_retried_in_time(faulted_run, tmp_path):
    run = faulted_run
    # a render was really under way: its replay worker processes died with the container
    assert any("tasks.sim.replay_worker" in cmd for cmd in run["killed_processes"]), run["killed_processes"]
    renders = {t["map_index"]: t for t in run["tis"] if t["task_id"] == "render"}
    assert len(renders) == 3 and all(t["state"] == "success" for t in renders.values()), run["summary"]
    for index in run["killed_renders"]:
        retried = renders[index]
        assert retried["try_number"] >= 2, f"render[{index}] was running when its worker died: {run['summary']}"
        # silence is noticed after the heartbeat timeout (checked every 10 s), then the retry waits its delay
        waited = (_when(retried["start_date"]) - run["killed_at"]).total_seconds()
        assert 0 < waited <= HEARTBEAT_TIMEOUT + 2 * RETRY_DELAY + 60, (
            f"render[{index}] restarted {waited:.0f} s after the kill"
        )
    _assert_store_whole(f"s3://{BUCKET}/runs", tmp_path / "cache")


def test_a_scheduler_crash_mid_train_leaves_the_training_running(faulted_run):
    run = faulted_run
    train = next(t for t in run["tis"] if t["task_id"] == "train")
    assert train["state"] == "success" and train["try_number"] == run["training"]["try_number"], (
        f"training was started again after the scheduler crash: {run['summary']}"
    )
    assert _when(train["end_date"]) > run["scheduler_killed_at"]  # it was still running when the scheduler died
    # the restarted scheduler carried the run on: everything after train ran, promptly
    after = [t for t in run["tis"] if t["task_id"] in ("verify", "promote", "report")]
    assert after and all(t["state"] == "success" for t in after), run["summary"]
    last = max(_when(t["end_date"]) for t in run["tis"])
    assert (last - _when(train["end_date"])).total_seconds() < 600, run["summary"]


def test_the_run_succeeds_with_gpu_tasks_on_the_gpu_worker_and_every_stage_on_s3(deployment, faulted_run):
    dep, run = deployment, faulted_run
    for t in run["tis"]:
        assert t["state"] == "success", run["summary"]
        if t["task_id"] in ("train", "verify", "confirm"):
            assert (t["queue"], t["pool"], t["hostname"]) == ("gpu", "gpu", "gpu-worker"), t
        else:
            assert (t["queue"], t["hostname"]) == ("default", "cpu-worker"), t
    s3 = boto3.client("s3")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    stages = sorted(k.split("/")[2] for k in keys if k.endswith("/manifest.json"))  # runs/<env>/<stage>/<key>/
    # one kept checkpoint (the demo profile): confirm is the verification already made, a cache hit
    assert stages == SMALL_RUN_STAGES
    confirmed = next(t for t in run["tis"] if t["task_id"] == "confirm")
    assert dep.request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['run_id']}/taskInstances/confirm/xcomEntries/return_value"
    )["value"]["cache_hit"], confirmed
    # the tiny policy's success is not judged in the demo profile: verified "unchecked", so latest is not written
    base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['run_id']}/taskInstances"
    promoted = dep.request("GET", f"{base}/promote/xcomEntries/return_value")
    assert "unchecked" in json.dumps(promoted) and "runs/PickCube-v1/latest.json" not in keys
    # XCom carries URIs and small metrics, never data
    xcom = dep.request("GET", f"{base}/train/xcomEntries/return_value")
    assert len(json.dumps(xcom)) < 10_000 and f"s3://{BUCKET}/runs" in json.dumps(xcom)
    # training logged to W&B (offline run, published inside the train artifact)
    assert any(k.startswith("runs/PickCube-v1/train/") and k.endswith(".wandb") for k in keys), keys
    # the first batch's camera views, as openpi logs them at step 0 (the model's inputs after every transform)
    assert any(
        k.startswith("runs/PickCube-v1/train/") and "/media/images/camera_views" in k and k.endswith(".png")
        for k in keys
    ), keys


def test_no_credentials_in_logs_xcom_or_manifests(deployment, faulted_run):
    """S3 and W&B secrets reach the workers only through Airflow connections: scan everything the run wrote."""
    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"].encode(), WANDB_KEY.encode()]
    leaks = []
    for path in deployment.base.rglob("*"):  # task logs, worker and scheduler logs, airflow.cfg
        if path.is_file() and path.suffix in (".log", ".json", ".jsonl", ".txt", ".cfg", ""):
            data = path.read_bytes()
            leaks += [f"{path}" for s in secrets if s in data]
    runs = deployment.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert runs, "the previous test's run should be recorded"
    for run in runs:
        tis = deployment.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100")
        for t in tis["task_instances"]:
            suffix = f"?map_index={t['map_index']}" if t["map_index"] >= 0 else ""
            try:
                xcom = deployment.request(
                    "GET",
                    f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/"
                    f"{t['task_id']}/xcomEntries/return_value{suffix}",
                )
            except Exception:
                continue
            leaks += [f"xcom {t['task_id']}" for s in secrets if s.decode() in json.dumps(xcom)]
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            data = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()  # every object, binary too
            leaks += [o["Key"] for s in secrets if s in data]
    assert not leaks, f"secret found in: {leaks}"


def test_stage_progress_reaches_the_task_logs(deployment, faulted_run):
    """The stages log through `logging` (`tasks.*` loggers at INFO): on a Celery worker, Airflow's task log holds
    their progress lines, as an operator reads them in the UI."""
    logs = {
        task: "".join(
            p.read_text(errors="replace") for p in deployment.base.rglob("*.log") if f"task_id={task}" in str(p)
        )
        for task in ("train", "convert")
    }
    assert "[train] step" in logs["train"] and "[train] probe loss of the final weights" in logs["train"]
    assert "[convert] published" in logs["convert"] or "[convert] cache hit" in logs["convert"]
