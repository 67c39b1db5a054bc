"""Integration tier: the pipeline on a real Airflow deployment (tests/integration/deployment.py).

Postgres and Redis from apt, api-server + scheduler + dag-processor + two Celery workers (queues
`default` and `gpu`), moto's S3 server over HTTP. A run is triggered through the REST API with a conf;
the test then reads Airflow's own records: every task succeeded, GPU-queued tasks ran on the gpu
worker and nothing else did, and every artifact is on S3 with its manifest. No credentials in the
workers' environment: S3 is reached through an Airflow connection.
"""

import json
import os
import time

import boto3
import pytest

from tests.integration.deployment import CONN_ID, WANDB_CONN_ID, WANDB_KEY

pytestmark = [pytest.mark.integration, pytest.mark.sim, pytest.mark.train]
DAG_ID = "maniskill_openpi_sft"


def test_triggered_run_succeeds_with_gpu_tasks_on_the_gpu_worker(deployment, s3_endpoint):
    bucket = "integration"
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/runs"
    dep = deployment
    dep.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    conf = {"demo_count": 2, "holdout_count": 1, "episodes_per_shard": 1, "steps": 2, "eval_episodes": 1,
            "eval_max_steps": 10, "holdout_frames": 2, "artifact_root": root, "s3_conn_id": CONN_ID,
            "wandb": True, "wandb_conn_id": WANDB_CONN_ID}
    run = dep.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 1200
    state = run["state"]
    while time.monotonic() < deadline and state not in ("success", "failed"):
        time.sleep(5)
        state = dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
    tis = dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    summary = [(t["task_id"], t["map_index"], t["state"], t["queue"], t["hostname"]) for t in tis]
    assert state == "success", f"{summary}\n--- scheduler ---\n{dep.tail('scheduler')}\n--- gpu ---\n{dep.tail('gpu-worker')}\n--- cpu ---\n{dep.tail('cpu-worker')}"
    assert all(t["state"] == "success" for t in tis)
    for t in tis:
        if t["task_id"] in ("train", "verify"):
            assert (t["queue"], t["pool"], t["hostname"]) == ("gpu", "gpu", "gpu-worker"), t
        else:
            assert (t["queue"], t["hostname"]) == ("default", "cpu-worker"), t
    assert len([t for t in tis if t["task_id"] == "render"]) == 3  # two one-episode train shards + the held-out shard

    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    stages = sorted(k.split("/")[2] for k in keys if k.endswith("/manifest.json"))  # runs/<env>/<stage>/<key>/
    assert stages == ["convert", "convert", "download", "render", "render", "render", "stats", "train", "verify"]
    # the tiny policy's success is not judged in the demo profile: verified "unchecked", so latest is not written
    promoted = dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/promote/xcomEntries/return_value")
    assert "unchecked" in json.dumps(promoted) and "runs/PickCube-v1/latest.json" not in keys
    # XCom carries URIs and small metrics, never data
    xcom = dep.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value")
    assert len(json.dumps(xcom)) < 10_000 and root in json.dumps(xcom)
    # training logged to W&B (offline run, published inside the train artifact)
    assert any(k.startswith("runs/PickCube-v1/train/") and k.endswith(".wandb") for k in keys), keys


def test_no_credentials_in_logs_xcom_or_manifests(deployment):
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
                xcom = deployment.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/"
                                                 f"{t['task_id']}/xcomEntries/return_value{suffix}")
            except Exception:
                continue
            leaks += [f"xcom {t['task_id']}" for s in secrets if s.decode() in json.dumps(xcom)]
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="integration"):
        for o in page.get("Contents", []):
            data = s3.get_object(Bucket="integration", Key=o["Key"])["Body"].read()  # every object, binary too
            leaks += [o["Key"] for s in secrets if s in data]
    assert not leaks, f"secret found in: {leaks}"
