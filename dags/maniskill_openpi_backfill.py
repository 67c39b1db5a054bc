"""Runs the whole pipeline for every registered ManiSkill task (or the chosen ones), one mapped group each.

Add a TaskSpec to tasks/core/specs.py and trigger this DAG: the new task runs every stage; the tasks that
were already trained find every artifact in the store (same inputs, same keys) and finish as cache hits.
Airflow's own date backfill (`airflow backfill create`) of the SFT DAG works too, for the same reason.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task, task_group

import tasks.airflow_tasks as t
from tasks.airflow_tasks.params import common_params, profile_doc, resolve_run_config
from tasks.core.specs import TASK_SPECS

DOC = f"""{__doc__}
### When it runs
By hand only (*Trigger*): pick the tasks in the form (none picked: every registered task). In each task's
group, render goes through the split's shards in turn and verify through the kept checkpoints in turn
(mapping cannot nest inside a mapped group); each shard still uses every core of its worker.

{profile_doc()}
"""


@dag(
    dag_id="maniskill_openpi_backfill",
    dag_display_name="ManiSkill → pi0 fine-tune, every task",
    description="The fine-tuning pipeline over every registered ManiSkill task (new ones run, the rest are cache hits)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["maniskill", "openpi", "backfill"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30), "retry_exponential_backoff": True},
    params={
        "env_ids": Param(
            [],
            type=["array", "null"],
            items={"type": "string", "enum": sorted(TASK_SPECS)},
            examples=sorted(TASK_SPECS),
            title="Tasks",
            section="Task and demos",
            description="ManiSkill tasks to run (registered in tasks/core/specs.py); none: every one",
        ),
        **common_params(),
    },
    doc_md=DOC,
)
def maniskill_openpi_backfill():
    @task(retries=0)  # bad params cannot get better by retrying
    def registered_tasks(params=None, dag_run=None) -> list[str]:
        from tasks.core.specs import TASK_SPECS as registry  # read at run time: a spec added since parsing counts

        chosen = list(params["env_ids"] or []) or sorted(registry)
        for env_id in chosen:  # refuse bad params before any task starts work
            resolve_run_config(dict(params), dag_run.conf, env_id=env_id, extra_keys=("env_ids",))
        return chosen

    @task_group
    def pipeline(env_id: str):
        config = t.resolve(env_id)
        demos = t.download()
        config >> demos
        plan = t.shards(demos)
        rendered = t.render_split.override(task_id="render")(plan, "train")
        rendered_holdout = t.render_split.override(task_id="render_holdout")(plan, "holdout")
        dataset = t.convert(rendered, "train")
        holdout = t.convert.override(task_id="convert_holdout")(rendered_holdout, "holdout")
        checkpoint = t.train(dataset, t.stats(dataset), holdout)
        verifications = t.verify_each.override(task_id="verify")(t.candidates(checkpoint), holdout)
        confirmation = t.confirm(t.select(verifications), holdout)
        promotion = t.promote(confirmation)
        confirmation >> t.approve() >> promotion  # a person may have to approve first (require_approval)
        t.report(promotion)

    pipeline.expand(env_id=registered_tasks())


maniskill_openpi_backfill()
