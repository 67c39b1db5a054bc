"""Reading a run's config and other tasks' results from XCom, inside one DAG run.

The config is built once, by the `resolve` task; every later task reads it from there at run time (an argument
would draw an edge from `resolve` to every task). In the backfill DAG the pipeline runs in a mapped task group:
the results read are then those of the same map index.
"""

from __future__ import annotations

from typing import Any

from tasks.core.run_config import RunConfig


# ---- reading the run's config and results from XCom ---------------------------------------------------------------
def _task_id(ti, name: str) -> str:
    """`name` in the calling task's group (the backfill DAG runs the pipeline in a mapped task group)."""
    group = ti.task_id.rpartition(".")[0]
    return f"{group}.{name}" if group else name


def pull(ti, name: str, *, mapped: bool = False) -> Any:
    """Another task's result in this run. Inside the backfill's mapped group: the same map index (the same task).
    `mapped`: the task is mapped itself (SFT render): every index's result, as a list."""
    if "." in ti.task_id:
        return ti.xcom_pull(task_ids=_task_id(ti, name), map_indexes=ti.map_index)
    if mapped:
        values = ti.xcom_pull(task_ids=name)
        return values if isinstance(values, list) else [values]  # a single mapped index comes back unwrapped
    return ti.xcom_pull(task_ids=name, map_indexes=-1)


def run_config(ti) -> RunConfig:
    return RunConfig.from_dict(pull(ti, "resolve"))
