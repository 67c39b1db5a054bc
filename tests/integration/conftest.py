"""The loopback Airflow deployment the integration and UI tests share (one start, stopped after this package)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="package")
def deployment(tmp_path_factory, s3_endpoint):
    """A real Airflow deployment on loopback (tests/fixtures/deployment.py), shared by the integration and UI
    tests of this package; S3 and W&B reach the workers through Airflow connections only. Package scope: it is
    stopped when the package's tests end, so its scheduler, dag-processor and workers do not take CPU from the
    rest of the suite."""
    import json

    from tests.fixtures.deployment import CONN_ID, WANDB_CONN_ID, WANDB_KEY, Deployment

    dep = Deployment(tmp_path_factory.mktemp("deployment"))
    try:
        dep.start()
        key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        dep.airflow(
            "connections",
            "add",
            CONN_ID,
            "--conn-type",
            "aws",
            "--conn-login",
            key,
            "--conn-password",
            secret,
            "--conn-extra",
            json.dumps({"endpoint_url": s3_endpoint, "region_name": "us-east-1"}),
        )
        dep.airflow(
            "connections",
            "add",
            WANDB_CONN_ID,
            "--conn-type",
            "generic",
            "--conn-password",
            WANDB_KEY,
            "--conn-extra",
            json.dumps({"mode": "offline"}),
        )
        for dag_id in ("maniskill_openpi_sft", "maniskill_openpi_backfill"):
            dep.wait_for_dag(dag_id)
        yield dep
    finally:
        dep.stop()
