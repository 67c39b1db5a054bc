"""ManiSkill demos -> rendered shards -> LeRobot dataset -> norm stats -> pi0 fine-tune -> verify -> promote -> report.

Thin wiring: each task calls one stage from tasks/ (through plugins/pipeline_tasks.py). XCom carries
artifact URIs and small metrics only. Runs weekly, when new demos land (the `maniskill_demos` asset),
or from the UI with the params form. Render is mapped over episode shards so Celery workers on several
machines render one demo set in parallel; the held-out shard becomes verify's held-out dataset. The
last task writes this run's report (verify's figures plus each stage's duration and cache hit).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

import pipeline_tasks as stages
from pipeline_params import resolve_run_config, sft_params

DEMOS_ASSET = Asset(name="maniskill_demos", uri=os.environ.get("PIPELINE_DEMOS_ASSET_URI", "s3://maniskill-demos/incoming"))
POLICY_ASSET = Asset(name="maniskill_pi0_policy", uri=os.environ.get("PIPELINE_POLICY_ASSET_URI", "s3://maniskill-policies/latest"))
RETRAIN_CRON = os.environ.get("PIPELINE_RETRAIN_CRON", "0 3 * * 0")  # Sundays 03:00 UTC


@dag(
    dag_id="maniskill_openpi_sft",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"), assets=DEMOS_ASSET),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["maniskill", "openpi", "lerobot", "pi0"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30), "retry_exponential_backoff": True},
    params=sft_params(),
    doc_md=__doc__,
)
def maniskill_openpi_sft():
    @task(retries=0)  # bad params cannot get better by retrying
    def resolve(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        return resolve_run_config(dict(params), dag_run.conf, triggering_asset_events)

    @task
    def download(cfg: dict) -> dict:
        return stages.download(cfg)

    @task
    def plan_shards(cfg: dict, demos: dict) -> list[dict]:
        return stages.shards(cfg, demos)

    @task(queue=stages.RENDER_QUEUE, pool=stages.RENDER_POOL)
    def render(cfg: dict, shard: dict) -> dict:
        return stages.render(cfg, shard)

    # Indexing by len() reads exactly the mapped results (iterating the lazy sequence probes one past the end).
    @task
    def convert(cfg: dict, rendered: list[dict]) -> dict:
        return stages.convert(cfg, [rendered[i] for i in range(len(rendered))], "train")

    @task
    def convert_holdout(cfg: dict, rendered: list[dict]) -> dict:
        return stages.convert(cfg, [rendered[i] for i in range(len(rendered))], "holdout")

    @task
    def stats(cfg: dict, dataset: dict) -> dict:
        return stages.stats(cfg, dataset)

    @task(queue=stages.GPU_QUEUE, pool=stages.GPU_POOL)
    def train(cfg: dict, dataset: dict, norm_stats: dict) -> dict:
        return stages.train(cfg, dataset, norm_stats)

    @task(queue=stages.GPU_QUEUE, pool=stages.GPU_POOL)
    def verify(cfg: dict, checkpoint: dict, holdout: dict) -> dict:
        return stages.verify(cfg, checkpoint, holdout)

    @task(outlets=[POLICY_ASSET])
    def promote(cfg: dict, verification: dict) -> dict:
        return stages.promote(cfg, verification)

    @task
    def report(cfg: dict, demos: dict, rendered: list[dict], dataset: dict, holdout: dict, norm_stats: dict,
               checkpoint: dict, verification: dict, promotion: dict, run_id=None) -> dict:
        return stages.run_report(cfg, run_id, {
            "download": demos, "render": [rendered[i] for i in range(len(rendered))], "convert": dataset,
            "convert_holdout": holdout, "stats": norm_stats, "train": checkpoint, "verify": verification, "promote": promotion})

    cfg = resolve()
    demos = download(cfg)
    rendered = render.partial(cfg=cfg).expand(shard=plan_shards(cfg, demos))
    dataset = convert(cfg, rendered)
    holdout = convert_holdout(cfg, rendered)
    norm_stats = stats(cfg, dataset)
    checkpoint = train(cfg, dataset, norm_stats)
    verification = verify(cfg, checkpoint, holdout)
    report(cfg, demos, rendered, dataset, holdout, norm_stats, checkpoint, verification, promote(cfg, verification))


maniskill_openpi_sft()
