"""Task bodies shared by the pipeline DAGs: each calls one stage from tasks/ with the resolved run config.

`cfg` is the dict `pipeline_params.resolve_run_config` returns; inputs and outputs are the stages'
small result dicts (artifact URI, digest, cache hit, metrics), which is all XCom carries.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline_glue import bind_wandb_connection, run_stage_task
from pipeline_params import train_params, verify_params
from tasks.render import plan_shards

# GPU stages go to their own Celery queue and pool; both are configurable, and the embedded default
# (dag.test, LocalExecutor) runs them without either existing. Render goes there only when asked to.
GPU_QUEUE = os.environ.get("PIPELINE_GPU_QUEUE", "gpu")
GPU_POOL = os.environ.get("PIPELINE_GPU_POOL", "gpu")
RENDER_QUEUE = os.environ.get("PIPELINE_RENDER_QUEUE", "default")
RENDER_POOL = os.environ.get("PIPELINE_RENDER_POOL", "default_pool")


def _run(fn, stage_params, cfg: dict[str, Any], **inputs) -> dict[str, Any]:
    return run_stage_task(fn, stage_params, root=cfg["artifact_root"], s3_conn_id=cfg["s3_conn_id"], **inputs)


def download(cfg: dict[str, Any]) -> dict[str, Any]:
    from tasks.download import DownloadParams, download as stage

    p = DownloadParams(env_id=cfg["env_id"], source=cfg["demo_source"], count=cfg["demo_count"] + cfg["holdout_count"],
                       seed=cfg["seed"], source_uri=cfg["demo_source_uri"])
    return _run(stage, p, cfg)


def shards(cfg: dict[str, Any], demos: dict[str, Any]) -> list[dict[str, Any]]:
    n = demos["metrics"]["episodes"]
    train_n = n - cfg["holdout_count"]
    if train_n < 1:
        raise ValueError(f"the demo set has {n} episodes: not enough for {cfg['holdout_count']} held out plus training")
    return [{**s, "demos": demos["uri"]} for s in plan_shards(train_n, cfg["holdout_count"], cfg["episodes_per_shard"])]


def render(cfg: dict[str, Any], shard: dict[str, Any]) -> dict[str, Any]:
    from tasks.render import RenderParams, render as stage

    p = RenderParams(env_id=cfg["env_id"], control_mode=cfg["control_mode"], shard_start=shard["start"],
                     shard_stop=shard["stop"], min_success_ratio=cfg["min_success_ratio"])
    return {**_run(stage, p, cfg, demos=shard["demos"]), "split": shard["split"]}


def convert(cfg: dict[str, Any], rendered: list[dict[str, Any]], split: str) -> dict[str, Any]:
    from tasks.convert import ConvertParams, convert as stage

    uris = [r["uri"] for r in sorted(rendered, key=lambda r: r["metrics"]["shard"][0]) if r["split"] == split]
    return _run(stage, ConvertParams(env_id=cfg["env_id"]), cfg, rendered=uris)


def stats(cfg: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    from tasks.stats import StatsParams, stats as stage

    return _run(stage, StatsParams(env_id=cfg["env_id"], action_horizon=cfg["action_horizon"]), cfg, dataset=dataset["uri"])


def train(cfg: dict[str, Any], dataset: dict[str, Any], norm_stats: dict[str, Any]) -> dict[str, Any]:
    from tasks.train import train as stage

    if cfg["wandb"]:
        bind_wandb_connection(cfg.get("wandb_conn_id"))
    return _run(stage, train_params(cfg), cfg, dataset=dataset["uri"], stats=norm_stats["uri"])


def verify(cfg: dict[str, Any], checkpoint: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    from tasks.verify import verify as stage

    return _run(stage, verify_params(cfg), cfg, checkpoint=checkpoint["uri"], holdout=holdout["uri"])


def run_report(cfg: dict[str, Any], run_id: str, results: dict[str, Any]) -> dict[str, Any]:
    """`results`: this run's stage results by stage name (a list for mapped stages), verify's among them."""
    from tasks.run_report import RunReportParams, run_report as stage, stage_rows

    return _run(stage, RunReportParams(env_id=cfg["env_id"], run_id=run_id), cfg, verification=results["verify"]["uri"],
                stages=stage_rows(results))


def promote(cfg: dict[str, Any], verification: dict[str, Any]) -> dict[str, Any]:
    from tasks.promote import PromoteParams, promote as stage

    return _run(stage, PromoteParams(env_id=cfg["env_id"]), cfg, verification=verification["uri"])
