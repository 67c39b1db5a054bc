"""ManiSkill demos -> rendered shards -> LeRobot dataset -> openpi norm stats, for one task per run.

Thin wiring only: every step calls a stage function from tasks/ (see README). XCom carries artifact
URIs and metrics, never data. Render is mapped over episode shards so Celery workers on several
machines can render one demo set in parallel; convert gathers the shards.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, task

from pipeline_glue import run_stage_task
from tasks.common import default_root
from tasks.specs import CONTROL_MODES, TASK_SPECS

RENDER_QUEUE = os.environ.get("PIPELINE_RENDER_QUEUE", "default")
RENDER_POOL = os.environ.get("PIPELINE_RENDER_POOL", "default_pool")


@dag(
    dag_id="maniskill_openpi_data",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["maniskill", "openpi", "lerobot"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30), "retry_exponential_backoff": True},
    params={
        "env_id": Param("PickCube-v1", enum=sorted(TASK_SPECS), description="ManiSkill task (from tasks/specs.py)"),
        "demo_source": Param("motionplanning", enum=["motionplanning", "hub", "s3"],
                             description="motionplanning: generate offline; hub: ManiSkill's download; s3: a mirrored demo set"),
        "demo_source_uri": Param("", type="string", description="for demo_source=s3: folder with trajectory.h5/.json"),
        "demo_count": Param(6, type="integer", minimum=1, maximum=100000, description="number of demos"),
        "seed": Param(0, type="integer", minimum=0, description="first motion-planning seed"),
        "control_mode": Param("pd_ee_delta_pose", enum=list(CONTROL_MODES), description="target control mode for replay"),
        "episodes_per_shard": Param(50, type="integer", minimum=1, maximum=10000, description="render shard size"),
        "min_success_ratio": Param(0.8, type="number", minimum=0, maximum=1, description="render fails below this replay success ratio"),
        "action_horizon": Param(10, type="integer", minimum=1, maximum=256, description="model action horizon (stats chunking)"),
        "artifact_root": Param(default_root(), type="string", pattern=r"^(file:///|s3://)[^\s]+$",
                               description="file:///abs/dir or s3://bucket/prefix"),
        "s3_conn_id": Param("", type="string", description="Airflow aws connection for s3:// roots (endpoint_url for MinIO)"),
    },
)
def maniskill_openpi_data():
    @task
    def download(params=None) -> dict:
        from tasks.download import DownloadParams, download as run

        p = DownloadParams(env_id=params["env_id"], source=params["demo_source"], count=params["demo_count"],
                           seed=params["seed"], source_uri=params["demo_source_uri"])
        return run_stage_task(run, p, root=params["artifact_root"], s3_conn_id=params["s3_conn_id"])

    @task
    def plan_shards(demos: dict, params=None) -> list[dict]:
        n, size = demos["metrics"]["episodes"], params["episodes_per_shard"]
        return [{"demos": demos["uri"], "start": a, "stop": min(a + size, n)} for a in range(0, n, size)]

    @task(queue=RENDER_QUEUE, pool=RENDER_POOL)
    def render(shard: dict, params=None) -> dict:
        from tasks.render import RenderParams, render as run

        p = RenderParams(env_id=params["env_id"], control_mode=params["control_mode"], shard_start=shard["start"],
                         shard_stop=shard["stop"], min_success_ratio=params["min_success_ratio"])
        return run_stage_task(run, p, root=params["artifact_root"], demos=shard["demos"], s3_conn_id=params["s3_conn_id"])

    @task
    def convert(shards: list[dict], params=None) -> dict:
        from tasks.convert import ConvertParams, convert as run

        return run_stage_task(run, ConvertParams(env_id=params["env_id"]), root=params["artifact_root"],
                              rendered=[s["uri"] for s in shards], s3_conn_id=params["s3_conn_id"])

    @task
    def stats(dataset: dict, params=None) -> dict:
        from tasks.stats import StatsParams, stats as run

        return run_stage_task(run, StatsParams(env_id=params["env_id"], action_horizon=params["action_horizon"]),
                              root=params["artifact_root"], dataset=dataset["uri"], s3_conn_id=params["s3_conn_id"])

    demos = download()
    rendered = render.expand(shard=plan_shards(demos))
    stats(convert(rendered))


maniskill_openpi_data()
