"""Rolls a task's promoted policy (`latest.json`) back to an earlier entry of its promotion history.

By hand only (no schedule): pick the task and, optionally, the verify or checkpoint URI of the entry to
restore (empty: the checkpoint the current latest replaced). The rollback is a compare-and-swap like a
promotion, refuses an entry whose checkpoint retention removed, and is recorded in the history with this
run as its author. See tasks/rollback.py (`python -m tasks.rollback history|rollback` does the same).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag

import tasks.airflow_tasks as t
from tasks.core.cli import default_root
from tasks.core.specs import TASK_SPECS


@dag(
    dag_id="maniskill_openpi_rollback",
    dag_display_name="Roll back a promoted policy",
    description="latest.json back to an earlier promotion record",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["maniskill", "registry"],
    params={
        "env_id": Param("PickCube-v1", type="string", enum=sorted(TASK_SPECS), title="Task"),
        "to": Param(
            "",
            type="string",
            title="Entry to restore",
            description="verify or checkpoint URI from the task's promotion history; empty: the checkpoint "
            "the current latest replaced",
        ),
        "artifact_root": Param(
            default_root(), type="string", title="Artifact root", description="file:///abs/dir or s3://bucket/prefix"
        ),
        "s3_conn_id": Param(
            os.environ.get("PIPELINE_S3_CONN_ID") or None, type=["string", "null"], title="S3 connection"
        ),
    },
    doc_md=__doc__,
)
def maniskill_openpi_rollback():
    t.rollback()


maniskill_openpi_rollback()
