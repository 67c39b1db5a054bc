"""An extra link on the verify task ("Run report") that opens the report.html the task wrote.

file:// roots link to the file; s3:// roots get a presigned HTTPS URL (valid for an hour) signed with the
run's S3 connection (its `s3_conn_id`), or `PIPELINE_REPORT_URL_BASE` + the object path when a static base
is set (e.g. a MinIO console or a CDN in front of the bucket).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

REPORT_TASK_IDS = ("verify", "confirm", "report")
RESOLVE_TASK_ID = "resolve"  # its result is the run's RunConfig (tasks/core/run_config.py), `s3_conn_id` included


def report_url(files_uri: str, s3_conn_id: str | None = None) -> str:
    """`files_uri`: where the verify artifact's files are (its XCom's `files_uri`); `s3_conn_id`: the run's."""
    report = f"{files_uri}/report.html"
    if report.startswith("file://"):
        return report
    base = os.environ.get("PIPELINE_REPORT_URL_BASE")
    bucket, _, key = report[len("s3://") :].partition("/")
    if base:
        return f"{base.rstrip('/')}/{bucket}/{key}"
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    # The run's connection wrote the report, so it can read it (and names the endpoint, e.g. MinIO); the API
    # server's own identity may not. None: boto's default chain, as the run's tasks had.
    hook = S3Hook(aws_conn_id=s3_conn_id or None)
    return hook.generate_presigned_url("get_object", params={"Bucket": bucket, "Key": key}, expires_in=3600) or ""


def _return_value(ti_key, task_id: str, map_index: int) -> Any:
    """A task's result in the link's run. get_link runs in the API server, where the Task SDK's XCom (which
    asks a task supervisor) cannot work: read the metadata DB, as Airflow's own XComOperatorLink does."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=ti_key.run_id, key="return_value", dag_ids=ti_key.dag_id, task_ids=task_id, map_indexes=map_index
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def _s3_conn_id(ti_key) -> str | None:
    group = ti_key.task_id.rpartition(".")[0]
    # Backfill: resolve sits in the same mapped group, at the same index; SFT: a single unmapped task.
    config = _return_value(
        ti_key, f"{group}.{RESOLVE_TASK_ID}" if group else RESOLVE_TASK_ID, ti_key.map_index if group else -1
    )
    return config.get("s3_conn_id") if isinstance(config, dict) else None


class RunReportLink(BaseOperatorLink):
    name = "Run report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.task_id.rsplit(".", 1)[-1] not in REPORT_TASK_IDS:
            return ""
        result = _return_value(ti_key, ti_key.task_id, ti_key.map_index)
        if not isinstance(result, dict) or not result.get("uri"):  # the backfill's verify returns one per checkpoint
            return ""
        files_uri = result.get("files_uri") or result["uri"]
        return report_url(files_uri, None if files_uri.startswith("file://") else _s3_conn_id(ti_key))


class RunReportPlugin(AirflowPlugin):
    name = "maniskill_openpi_run_report"
    global_operator_extra_links = [RunReportLink()]
