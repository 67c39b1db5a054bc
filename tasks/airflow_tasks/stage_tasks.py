"""The pipeline's Airflow tasks, defined once and used by both DAGs (queue, pool, retries and outlets set here).

Each task calls one stage from tasks/ with the run's typed config (tasks/core/run_config.py). The config is
built and validated once, by the first task (`resolve`), and every later task reads it from that task's
XCom at run time instead of taking it as an argument: an argument would draw an edge from `resolve` to
every task and bury the pipeline's shape in the graph. The stage results (artifact URI, digest, cache
hit, metrics) are all XCom carries; `report` collects them itself, so it hangs off `promote` only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from airflow.sdk import Asset, task

from tasks.airflow_tasks.approval import PromotionApproval, approval_answer
from tasks.airflow_tasks.glue import bind_wandb_connection, run_stage_task
from tasks.airflow_tasks.params import resolve_run_config
from tasks.airflow_tasks.xcom import pull, run_config
from tasks.core.run_config import RunConfig
from tasks.render import plan_shards

# GPU stages go to their own Celery queue and pool; both are configurable, and the embedded default
# (dag.test, LocalExecutor) runs them without either existing. Render goes there only when asked to.
GPU_QUEUE = os.environ.get("PIPELINE_GPU_QUEUE", "gpu")
GPU_POOL = os.environ.get("PIPELINE_GPU_POOL", "gpu")
RENDER_QUEUE = os.environ.get("PIPELINE_RENDER_QUEUE", "default")
RENDER_POOL = os.environ.get("PIPELINE_RENDER_POOL", "default_pool")
DEMOS_ASSET = Asset(
    name="maniskill_demos", uri=os.environ.get("PIPELINE_DEMOS_ASSET_URI", "s3://maniskill-demos/incoming")
)
POLICY_ASSET = Asset(
    name="maniskill_pi0_policy", uri=os.environ.get("PIPELINE_POLICY_ASSET_URI", "s3://maniskill-policies/latest")
)


def _run(fn, stage_params, config: RunConfig, **inputs) -> dict[str, Any]:
    return run_stage_task(fn, stage_params, root=config.artifact_root, s3_conn_id=config.s3_conn_id, **inputs)


def _items(values) -> list:
    # Indexing by len() reads exactly the mapped results (iterating the lazy sequence probes one past the end).
    return [values[i] for i in range(len(values))]


# ---- the tasks ------------------------------------------------------------------------------------------------------
@task(retries=0)  # bad params cannot get better by retrying: fail the run at once, with the message in the log
def resolve(env_id: str | None = None, params=None, dag_run=None, triggering_asset_events=None) -> dict:
    """Builds and validates the run config; `env_id` is given by the backfill DAG (one mapped group per task)."""
    if env_id is None:
        return resolve_run_config(dict(params), dag_run.conf, triggering_asset_events)
    return resolve_run_config(dict(params), dag_run.conf, env_id=env_id, extra_keys=("env_ids",))


@task
def download(ti=None) -> dict:
    from tasks.download import download as stage

    config = run_config(ti)
    return _run(stage, config.download_params(), config)


@task
def shards(demos: dict, ti=None) -> list[dict]:
    """The render plan: the held-out shard first, then training shards of `episodes_per_shard`."""
    config = run_config(ti)
    n = demos["metrics"]["episodes"]
    train_n = n - config.holdout_count
    if train_n < 1:
        raise ValueError(f"the demo set has {n} episodes: not enough for {config.holdout_count} held out plus training")
    return [{**s, "demos": demos["uri"]} for s in plan_shards(train_n, config.holdout_count, config.episodes_per_shard)]


def _render(config: RunConfig, shard: dict) -> dict:
    from tasks.render import render as stage

    return {
        **_run(stage, config.render_params(shard["start"], shard["stop"]), config, demos=shard["demos"]),
        "split": shard["split"],
    }


@task(queue=RENDER_QUEUE, pool=RENDER_POOL)
def render(shard: dict, ti=None) -> dict:
    """One shard (the SFT DAG maps this over the plan, so several workers render one demo set)."""
    return _render(run_config(ti), shard)


@task(queue=RENDER_QUEUE, pool=RENDER_POOL)
def render_split(plan: list[dict], split: str, ti=None) -> list[dict]:
    """Every shard of one split in turn (the backfill DAG: mapping cannot nest inside its mapped group)."""
    config = run_config(ti)
    return [_render(config, s) for s in plan if s["split"] == split]


@task
def convert(rendered: list[dict], split: str, ti=None) -> dict:
    from tasks.convert import convert as stage

    config = run_config(ti)
    mine = sorted((r for r in _items(rendered) if r["split"] == split), key=lambda r: r["metrics"]["shard"][0])
    return _run(stage, config.convert_params(), config, rendered=[r["uri"] for r in mine])


@task
def stats(dataset: dict, ti=None) -> dict:
    from tasks.stats import stats as stage

    config = run_config(ti)
    return _run(stage, config.stats_params(), config, dataset=dataset["uri"])


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def train(dataset: dict, norm_stats: dict, holdout: dict, ti=None) -> dict:
    """Training, with the held-out dataset for the validation loss."""
    from tasks.train import train as stage

    config = run_config(ti)
    if config.wandb:
        bind_wandb_connection(config.wandb_conn_id)
    return _run(
        stage, config.train_params(), config, dataset=dataset["uri"], stats=norm_stats["uri"], holdout=holdout["uri"]
    )


@task
def candidates(trained: dict) -> list[dict]:
    """The checkpoints the training run kept (keep_period) and its final one: what verify evaluates. With several,
    each is scored on selection seeds, and `confirm` verifies the chosen one again on the protocol's seeds."""
    steps = trained["metrics"].get("checkpoint_steps") or [trained["metrics"]["steps"]]
    return [{"uri": trained["uri"], "step": int(step), "selection": len(steps) > 1} for step in steps]


def _verify(config: RunConfig, checkpoint: dict, holdout: dict) -> dict:
    from tasks.verify import verify as stage

    params = dataclasses.replace(
        config.verify_params(selection=bool(checkpoint.get("selection"))), step=int(checkpoint.get("step") or 0)
    )
    return _run(stage, params, config, checkpoint=checkpoint["uri"], holdout=holdout["uri"])


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def verify(checkpoint: dict, holdout: dict, ti=None) -> dict:
    """One kept checkpoint (the SFT DAG maps this over them, so several GPUs evaluate at once)."""
    return _verify(run_config(ti), checkpoint, holdout)


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def verify_each(checkpoints: list[dict], holdout: dict, ti=None) -> list[dict]:
    """Every kept checkpoint in turn (the backfill DAG: mapping cannot nest inside its mapped group)."""
    config = run_config(ti)
    return [_verify(config, c, holdout) for c in checkpoints]


@task
def select(verifications: list[dict], ti=None) -> dict:
    """The kept checkpoint that succeeds most in closed loop (ties: lower validation loss) is the candidate."""
    from tasks.select_checkpoint import SelectParams
    from tasks.select_checkpoint import select as stage

    config = run_config(ti)
    return _run(
        stage, SelectParams(env_id=config.env_id), config, verifications=[v["uri"] for v in _items(verifications)]
    )


@task(queue=GPU_QUEUE, pool=GPU_POOL)
def confirm(selection: dict, holdout: dict, ti=None) -> dict:
    """The selected checkpoint verified on the protocol's own seeds, with the harness check: the figures promote
    judges are not the ones it was selected by. With one checkpoint it is the verification already made (a cache
    hit)."""
    return _verify(run_config(ti), {"uri": selection["metrics"]["checkpoint"], "step": 0}, holdout)


def approve() -> PromotionApproval:
    """The human approval between verify and promote (a no-op unless the run sets require_approval)."""
    # The DAG's retries: what fails before the question (reading the run's results, S3) is worth retrying; an
    # answer, once given, is never lost (a retry could only re-ask if recording the answer itself failed).
    # Not on the GPU queue: waiting in awaiting_input holds no worker slot anyway.
    return PromotionApproval(task_id="approve")


@task(outlets=[POLICY_ASSET])
def promote(confirmation: dict, ti=None) -> dict:
    """Moves latest to the selected checkpoint (its confirming verification) when the rule (and, if the run requires
    it, a person in `approve`) says so."""
    from tasks.promote import promote as stage

    config = run_config(ti)
    actor = f"airflow {ti.dag_id} {ti.run_id}"  # the promotion history names the run that moved latest
    answer = approval_answer(pull(ti, "approve"))
    return _run(stage, config.promote_params(actor=actor, **answer), config, verification=confirmation["uri"])


@task
def report(promotion: dict, ti=None, run_id=None) -> dict:
    """The run report: verify's figures plus every stage's duration, cache hit and artifact in this run."""
    from tasks.run_report import RunReportParams, stage_rows
    from tasks.run_report import run_report as stage

    config = run_config(ti)
    if "." in ti.task_id:  # backfill: render per split and verify per checkpoint, each a list
        rendered = (pull(ti, "render") or []) + (pull(ti, "render_holdout") or [])
        verified = pull(ti, "verify") or []
    else:
        rendered = pull(ti, "render", mapped=True)
        verified = pull(ti, "verify", mapped=True)
    selection, confirmation = pull(ti, "select"), pull(ti, "confirm")
    results = {
        "download": pull(ti, "download"),
        "render": rendered,
        "convert": pull(ti, "convert"),
        "convert_holdout": pull(ti, "convert_holdout"),
        "stats": pull(ti, "stats"),
        "train": pull(ti, "train"),
        "verify": verified,
        "select": selection,
        "confirm": confirmation,
        "promote": promotion,
    }
    return _run(
        stage,
        RunReportParams(env_id=config.env_id, run_id=run_id),
        config,
        verification=confirmation["uri"],
        stages=stage_rows(results),
        selection=selection["uri"],
        promotion=(promotion or {}).get("metrics"),
    )


# ---- the store's upkeep (the rollback and maintenance DAGs; their params are their own forms) ----------------------
# outlets: a rollback moves the promoted policy like a promotion does. retries=0: a missing entry or a removed
# checkpoint cannot get better by retrying.
@task(retries=0, outlets=[POLICY_ASSET])
def rollback(params=None, dag_run=None) -> dict:
    """Makes an earlier entry of the task's promotion history latest again (tasks/rollback.py)."""
    from tasks.rollback import RollbackParams
    from tasks.rollback import rollback as stage

    actor = f"airflow {dag_run.dag_id} {dag_run.run_id}"  # the history names the run that moved latest
    stage_params = RollbackParams(env_id=params["env_id"], to=params["to"] or "", actor=actor)
    return run_stage_task(stage, stage_params, root=params["artifact_root"], s3_conn_id=params["s3_conn_id"])


@task
def sweep(params=None) -> dict:
    """Retention and the orphan sweep of the artifact store (tasks/maintenance.py)."""
    from tasks.maintenance import MaintenanceParams, maintain

    stage_params = MaintenanceParams(
        keep_runs=params["keep_runs"],
        grace_hours=params["grace_hours"],
        progress_days=params["progress_days"],
        dry_run=params["dry_run"],
    )
    return run_stage_task(maintain, stage_params, root=params["artifact_root"], s3_conn_id=params["s3_conn_id"])
