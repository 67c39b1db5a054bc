"""Airflow glue for the pipeline stages: failure classification and artifact-store credentials.

Stages in tasks/ know nothing about Airflow. Here:
- bad input (ValueError and its kin: unknown env id, bad params, corrupt demo files, refused stats) fails
  the task at once with no retry, since retrying cannot fix it; anything else (S3 outage, a killed
  worker) is left to the task's retries with backoff.
- an Airflow connection (aws type, optional `endpoint_url` for MinIO) becomes the standard AWS
  environment variables the stage's S3 client reads, so credentials never appear in params or XCom.
- likewise a W&B connection (password: API key; host: a self-hosted W&B URL; extra `mode`/`entity`) becomes
  `WANDB_API_KEY` and friends for the training task only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from tasks.core.errors import NotRetryable
from tasks.core.stage import StageResult
from tasks.core.store import ArtifactError

# ValueError covers SpecError, StatsError, TrainError, VerifyError, ConfigError and bad params; NotRetryable the
# stages' other refusals (ConvertError, RenderError, DownloadError, TokenizerError).
NON_RETRYABLE = (ValueError, ArtifactError, NotRetryable)


def bind_s3_connection(conn_id: str | None) -> None:
    if not conn_id:
        return
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    creds = hook.get_credentials()
    os.environ["AWS_ACCESS_KEY_ID"] = creds.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds.secret_key
    if creds.token:
        os.environ["AWS_SESSION_TOKEN"] = creds.token
    extra = hook.conn_config
    if extra.endpoint_url:
        os.environ["AWS_ENDPOINT_URL_S3"] = extra.endpoint_url
    if extra.region_name:
        os.environ["AWS_DEFAULT_REGION"] = extra.region_name


def bind_wandb_connection(conn_id: str | None) -> None:
    """W&B credentials for training. Without a connection id, W&B reads its own environment (WANDB_API_KEY)."""
    if not conn_id:
        return
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise AirflowFailException(
            f"W&B connection {conn_id!r} does not exist: create it (password = W&B API key) or clear wandb_conn_id "
            "to let W&B read WANDB_API_KEY from the worker's environment"
        ) from None
    extra = conn.extra_dejson
    # A configured account means "log to it", unless the connection says otherwise (e.g. an air-gapped worker).
    mode = extra.get("mode", "online")
    if not conn.password and mode != "offline":
        raise AirflowFailException(
            f"W&B connection {conn_id!r} has no password: put the W&B API key in its password field "
            "(or set extra mode=offline)"
        )
    if conn.password:
        os.environ["WANDB_API_KEY"] = conn.password
    if conn.host:
        os.environ["WANDB_BASE_URL"] = conn.host if "://" in conn.host else f"https://{conn.host}"
    os.environ["WANDB_MODE"] = mode
    if extra.get("entity"):
        os.environ["WANDB_ENTITY"] = extra["entity"]


def run_stage_task(fn: Callable[..., StageResult], *args: Any, s3_conn_id: str | None = None, **kwargs: Any) -> dict:
    """Runs a stage function; returns its small result dict for XCom."""
    bind_s3_connection(s3_conn_id)
    try:
        result = fn(*args, **kwargs)
    except NON_RETRYABLE as e:
        raise AirflowFailException(f"{type(e).__name__}: {e}") from e
    return result.to_dict()


def worker_hostname() -> str:
    """`[core] hostname_callable`: a worker's name as recorded on its task instances.

    Several Celery workers on one host (the integration tier; a CPU and a GPU worker in one VM) would all
    report the same FQDN; `PIPELINE_WORKER_NAME` tells them apart.
    """
    import socket

    return os.environ.get("PIPELINE_WORKER_NAME") or socket.getfqdn()
