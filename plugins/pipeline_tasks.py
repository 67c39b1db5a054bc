"""Task bodies shared by the pipeline DAGs: each calls one stage from tasks/ with the run's typed config.

`cfg` is the plain-data form of `tasks.run_config.RunConfig` that the first task (`resolve`) built and
validated; each body turns it back into the typed config and takes its stage's params from it. Inputs
and outputs are the stages' small result dicts (artifact URI, digest, cache hit, metrics), which is all
XCom carries.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline_glue import bind_wandb_connection, run_stage_task
from tasks.render import plan_shards
from tasks.run_config import RunConfig

# GPU stages go to their own Celery queue and pool; both are configurable, and the embedded default
# (dag.test, LocalExecutor) runs them without either existing. Render goes there only when asked to.
GPU_QUEUE = os.environ.get("PIPELINE_GPU_QUEUE", "gpu")
GPU_POOL = os.environ.get("PIPELINE_GPU_POOL", "gpu")
RENDER_QUEUE = os.environ.get("PIPELINE_RENDER_QUEUE", "default")
RENDER_POOL = os.environ.get("PIPELINE_RENDER_POOL", "default_pool")


def _run(fn, stage_params, config: RunConfig, **inputs) -> dict[str, Any]:
    return run_stage_task(fn, stage_params, root=config.artifact_root, s3_conn_id=config.s3_conn_id, **inputs)


def download(cfg: dict[str, Any]) -> dict[str, Any]:
    from tasks.download import download as stage

    config = RunConfig.from_dict(cfg)
    return _run(stage, config.download_params(), config)


def shards(cfg: dict[str, Any], demos: dict[str, Any]) -> list[dict[str, Any]]:
    config = RunConfig.from_dict(cfg)
    n = demos["metrics"]["episodes"]
    train_n = n - config.holdout_count
    if train_n < 1:
        raise ValueError(f"the demo set has {n} episodes: not enough for {config.holdout_count} held out plus training")
    return [{**s, "demos": demos["uri"]} for s in plan_shards(train_n, config.holdout_count, config.episodes_per_shard)]


def render(cfg: dict[str, Any], shard: dict[str, Any]) -> dict[str, Any]:
    from tasks.render import render as stage

    config = RunConfig.from_dict(cfg)
    return {**_run(stage, config.render_params(shard["start"], shard["stop"]), config, demos=shard["demos"]),
            "split": shard["split"]}


def convert(cfg: dict[str, Any], rendered: list[dict[str, Any]], split: str) -> dict[str, Any]:
    from tasks.convert import convert as stage

    config = RunConfig.from_dict(cfg)
    uris = [r["uri"] for r in sorted(rendered, key=lambda r: r["metrics"]["shard"][0]) if r["split"] == split]
    return _run(stage, config.convert_params(), config, rendered=uris)


def stats(cfg: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    from tasks.stats import stats as stage

    config = RunConfig.from_dict(cfg)
    return _run(stage, config.stats_params(), config, dataset=dataset["uri"])


def train(cfg: dict[str, Any], dataset: dict[str, Any], norm_stats: dict[str, Any]) -> dict[str, Any]:
    from tasks.train import train as stage

    config = RunConfig.from_dict(cfg)
    if config.wandb:
        bind_wandb_connection(config.wandb_conn_id)
    return _run(stage, config.train_params(), config, dataset=dataset["uri"], stats=norm_stats["uri"])


def verify(cfg: dict[str, Any], checkpoint: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    from tasks.verify import verify as stage

    config = RunConfig.from_dict(cfg)
    return _run(stage, config.verify_params(), config, checkpoint=checkpoint["uri"], holdout=holdout["uri"])


def run_report(cfg: dict[str, Any], run_id: str, results: dict[str, Any]) -> dict[str, Any]:
    """`results`: this run's stage results by stage name (a list for mapped stages), verify's among them."""
    from tasks.run_report import RunReportParams, run_report as stage, stage_rows

    config = RunConfig.from_dict(cfg)
    return _run(stage, RunReportParams(env_id=config.env_id, run_id=run_id), config,
                verification=results["verify"]["uri"], stages=stage_rows(results))


def promote(cfg: dict[str, Any], verification: dict[str, Any]) -> dict[str, Any]:
    from tasks.promote import promote as stage

    config = RunConfig.from_dict(cfg)
    return _run(stage, config.promote_params(), config, verification=verification["uri"])
