"""Keeps the artifact store bounded: orphan payloads swept, old artifacts removed by a retention policy.

Kept: everything reachable from each task's promoted `latest.json` and from its newest run reports, with
their whole lineage, and anything younger than the grace period (a run may still be writing it). The
rest goes, oldest first, children before parents. The task log lists what was kept and removed, the bytes
freed and a per-task, per-stage storage report. See tasks/maintenance.py.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag

import tasks.airflow_tasks as t
from tasks.core.cli import default_root

DOC = f"""{__doc__}
### When it runs
Daily at 04:00 UTC (`PIPELINE_MAINTENANCE_CRON`), and by hand. Set *Dry run* to see what a sweep would
remove without removing it (`python -m tasks.maintenance` does a dry run unless given `--apply`).
"""


@dag(
    dag_id="maniskill_openpi_maintenance",
    dag_display_name="Artifact store maintenance",
    description="Orphan payloads swept, old artifacts removed by retention, storage report",
    schedule=os.environ.get("PIPELINE_MAINTENANCE_CRON", "0 4 * * *"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["maniskill", "maintenance"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
    params={
        "artifact_root": Param(
            default_root(), type="string", title="Artifact root", description="file:///abs/dir or s3://bucket/prefix"
        ),
        "s3_conn_id": Param(
            os.environ.get("PIPELINE_S3_CONN_ID") or None, type=["string", "null"], title="S3 connection"
        ),
        "keep_runs": Param(
            5,
            type="integer",
            minimum=1,
            maximum=10_000,
            title="Runs kept per task",
            description="the newest run reports per task whose artifacts are kept, besides latest's",
        ),
        "grace_hours": Param(
            24.0,
            type="number",
            minimum=0,
            maximum=8760,
            title="Grace period (hours)",
            description="artifacts created or used more recently, and younger payload folders, are "
            "never removed (0, or at least 1 h: twice the in-use refresh)",
        ),
        "progress_days": Param(
            14.0,
            type="number",
            minimum=1,
            maximum=3650,
            title="Resume points kept (days)",
            description="resume points of a training with no checkpoint for this long are removed",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="report only, remove nothing"),
    },
    doc_md=DOC,
)
def maniskill_openpi_maintenance():
    t.sweep()


maniskill_openpi_maintenance()
