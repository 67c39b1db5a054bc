"""Runs the whole pipeline for every registered ManiSkill task (or a chosen few), one mapped group each.

Add a TaskSpec to tasks/specs.py and trigger this DAG: the new task runs every stage; the tasks that
were already trained find every artifact in the store (same inputs, same keys) and finish as cache hits.
Render is one task per split here, going through the split's shards in turn (mapping cannot nest inside
a mapped group); each shard still uses every core of its worker. Airflow's own date backfill (`airflow backfill create`) of the SFT DAG works
too, for the same reason: a rerun with unchanged inputs is all cache hits.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task, task_group

import pipeline_tasks as stages
from pipeline_params import common_params, resolve_run_config
from tasks.specs import TASK_SPECS


@dag(
    dag_id="maniskill_openpi_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["maniskill", "openpi", "backfill"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30), "retry_exponential_backoff": True},
    params={"env_ids": Param([], type="array", items={"type": "string", "enum": sorted(TASK_SPECS)},
                             description="tasks to run; empty: every registered task"),
            **common_params()},
    doc_md=__doc__,
)
def maniskill_openpi_backfill():
    @task(retries=0)  # bad params cannot get better by retrying
    def registered_tasks(params=None, dag_run=None) -> list[str]:
        from tasks.specs import TASK_SPECS as registry  # read at run time: a spec added since parsing counts

        chosen = list(params["env_ids"]) or sorted(registry)
        for env_id in chosen:  # refuse bad params before any task starts work
            resolve_run_config(dict(params), dag_run.conf, env_id=env_id, extra_keys=("env_ids",))
        return chosen

    @task_group
    def pipeline(env_id: str):
        @task(retries=0)
        def resolve(env_id: str, params=None) -> dict:
            return resolve_run_config(dict(params), env_id=env_id)

        @task
        def download(cfg: dict) -> dict:
            return stages.download(cfg)

        @task(queue=stages.RENDER_QUEUE, pool=stages.RENDER_POOL)
        def render(cfg: dict, demos: dict, split: str) -> list[dict]:
            # The same shards as the SFT DAG (same keys, so its renders are cache hits here), one after another.
            return [stages.render(cfg, s) for s in stages.shards(cfg, demos) if s["split"] == split]

        @task
        def convert(cfg: dict, rendered: list[dict]) -> dict:
            return stages.convert(cfg, rendered, rendered[0]["split"])

        @task
        def stats(cfg: dict, dataset: dict) -> dict:
            return stages.stats(cfg, dataset)

        @task(queue=stages.GPU_QUEUE, pool=stages.GPU_POOL)
        def train(cfg: dict, dataset: dict, norm_stats: dict) -> dict:
            return stages.train(cfg, dataset, norm_stats)

        @task(queue=stages.GPU_QUEUE, pool=stages.GPU_POOL)
        def verify(cfg: dict, checkpoint: dict, holdout: dict) -> dict:
            return stages.verify(cfg, checkpoint, holdout)

        @task
        def promote(cfg: dict, verification: dict) -> dict:
            return stages.promote(cfg, verification)

        @task
        def report(cfg: dict, demos: dict, rendered: list[dict], rendered_holdout: list[dict], dataset: dict, holdout: dict,
                   norm_stats: dict, checkpoint: dict, verification: dict, promotion: dict, run_id=None) -> dict:
            return stages.run_report(cfg, run_id, {
                "download": demos, "render": rendered + rendered_holdout, "convert": dataset, "convert_holdout": holdout,
                "stats": norm_stats, "train": checkpoint, "verify": verification, "promote": promotion})

        cfg = resolve(env_id)
        demos = download(cfg)
        rendered_train = render.override(task_id="render")(cfg, demos, "train")
        rendered_holdout = render.override(task_id="render_holdout")(cfg, demos, "holdout")
        dataset = convert.override(task_id="convert")(cfg, rendered_train)
        holdout = convert.override(task_id="convert_holdout")(cfg, rendered_holdout)
        norm_stats = stats(cfg, dataset)
        checkpoint = train(cfg, dataset, norm_stats)
        verification = verify(cfg, checkpoint, holdout)
        report(cfg, demos, rendered_train, rendered_holdout, dataset, holdout, norm_stats, checkpoint, verification,
               promote(cfg, verification))

    pipeline.expand(env_id=registered_tasks())


maniskill_openpi_backfill()
