"""The pipeline's stages as Airflow tasks: the building blocks of our DAGs, and of yours.

Installing this package into an Airflow image (`pip install .`) provides them; a DAG wires the ones it needs:

    from tasks.airflow_tasks import convert, download, render, resolve, run_params, shards, stats

`resolve` builds and validates the run config from the DAG's params (`run_params()`: every run setting as a typed
form) and the trigger's conf; every other task reads it from there, so `resolve` must run first. Each task calls
one stage (tasks/<stage>.py) and returns its result (artifact URI, digest, cache hit, metrics) for the next:
`download` -> `shards` (the render plan) -> `render` (mapped over the shards) -> `convert(rendered, "train" |
"holdout")` -> `stats` -> `train(dataset, stats, holdout)` -> `candidates` -> `verify` (mapped) -> `select` ->
`confirm` -> `approve` -> `promote` -> `report`. Queues, pools and retries are preset: train, verify and
confirm go to the `gpu` queue and pool (PIPELINE_GPU_QUEUE / PIPELINE_GPU_POOL), render to PIPELINE_RENDER_QUEUE;
bad input fails a task at once, without retries. README.md shows a user DAG.
"""

from tasks.airflow_tasks.params import run_params
from tasks.airflow_tasks.stage_tasks import (
    DEMOS_ASSET,
    POLICY_ASSET,
    approve,
    candidates,
    confirm,
    convert,
    download,
    promote,
    render,
    render_split,
    report,
    resolve,
    rollback,
    select,
    shards,
    stats,
    sweep,
    train,
    verify,
    verify_each,
)

__all__ = [
    "DEMOS_ASSET",
    "POLICY_ASSET",
    "approve",
    "candidates",
    "confirm",
    "convert",
    "download",
    "promote",
    "render",
    "render_split",
    "report",
    "resolve",
    "rollback",
    "run_params",
    "select",
    "shards",
    "stats",
    "sweep",
    "train",
    "verify",
    "verify_each",
]
