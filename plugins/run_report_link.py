"""An extra link on the verify task ("Run report") that opens the report.html the task wrote.

file:// roots link to the file; s3:// roots get a presigned HTTPS URL (valid for an hour) from the
task's S3 credentials, or `PIPELINE_REPORT_URL_BASE` + the object path when a static base is set
(e.g. a MinIO console or a CDN in front of the bucket).
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

REPORT_TASK_IDS = ("verify", "confirm", "report")


def report_url(files_uri: str) -> str:
    """`files_uri`: where the verify artifact's files are (its XCom's `files_uri`)."""
    report = f"{files_uri}/report.html"
    if report.startswith("file://"):
        return report
    base = os.environ.get("PIPELINE_REPORT_URL_BASE")
    bucket, _, key = report[len("s3://"):].partition("/")
    if base:
        return f"{base.rstrip('/')}/{bucket}/{key}"
    import boto3

    return boto3.client("s3").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


class RunReportLink(BaseOperatorLink):
    name = "Run report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.task_id.rsplit(".", 1)[-1] not in REPORT_TASK_IDS:
            return ""
        result = XCom.get_value(ti_key=ti_key, key="return_value")
        if not isinstance(result, dict) or not result.get("uri"):  # the backfill's verify returns one per checkpoint
            return ""
        return report_url(result.get("files_uri") or result["uri"])


class RunReportPlugin(AirflowPlugin):
    name = "maniskill_openpi_run_report"
    global_operator_extra_links = [RunReportLink()]
