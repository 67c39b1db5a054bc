"""ManiSkill demos -> rendered shards -> LeRobot dataset -> norm stats -> pi0 fine-tune -> verify each kept checkpoint ->
select the best in closed loop -> promote -> report.

Thin wiring of the stage tasks in tasks/airflow_tasks/ (each calls one stage from tasks/); XCom carries
artifact URIs and small metrics only.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag

import tasks.airflow_tasks as t
from tasks.airflow_tasks.params import profile_doc, run_params

RETRAIN_CRON = os.environ.get("PIPELINE_RETRAIN_CRON", "0 3 * * 0")  # Sundays 03:00 UTC

DOC = f"""{__doc__}
### When it runs
- **On a schedule**: cron `{RETRAIN_CRON}` (UTC; `PIPELINE_RETRAIN_CRON`) retrains with the form's defaults.
- **When new demos land**: an event on the `{t.DEMOS_ASSET.name}` asset; its `extra` may set `env_id`,
  `demo_source`, `demo_source_uri` and `demo_count` (any other key fails the run, naming the closest valid one).
- **By hand**: *Trigger* with the form below; bad values fail the `resolve` task at once, without retries.

{profile_doc()}

### The graph
`download` → `shards` (the render plan) → `render` (mapped: one task per shard, on any worker) →
`convert` / `convert_holdout` → `stats` → `train` (queue/pool `gpu`) → `candidates` (the checkpoints training
kept: every `keep_period` steps, and the last) → `verify` (mapped: one task per checkpoint, queue/pool `gpu`) →
`select` (the checkpoint with the most closed-loop successes; ties: lower validation loss) → `confirm` (the chosen
checkpoint verified again on the protocol's own seeds, with the harness check; `gpu`) → `approve` (a
person's approval in *Required Actions*, only when the run sets `require_approval` and the rule would promote) →
`promote` (moves `latest` and updates the `{t.POLICY_ASSET.name}` asset) → `report` (the run report; its task page
has a **Run report** link). `resolve` builds the run config first; the other tasks read it from its result.
"""


@dag(
    dag_id="maniskill_openpi_sft",
    dag_display_name="ManiSkill → pi0 fine-tune",
    description="ManiSkill demos to a verified, fine-tuned openpi pi0 policy, for one task",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"), assets=t.DEMOS_ASSET),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["maniskill", "openpi", "lerobot", "pi0"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30), "retry_exponential_backoff": True},
    params=run_params(),
    doc_md=DOC,
)
def maniskill_openpi_sft():
    config = t.resolve()
    demos = t.download()
    config >> demos
    rendered = t.render.expand(shard=t.shards(demos))
    dataset = t.convert(rendered, "train")
    holdout = t.convert.override(task_id="convert_holdout")(rendered, "holdout")
    checkpoint = t.train(dataset, t.stats(dataset), holdout)
    verifications = t.verify.partial(holdout=holdout).expand(checkpoint=t.candidates(checkpoint))
    confirmation = t.confirm(t.select(verifications), holdout)
    promotion = t.promote(confirmation)
    confirmation >> t.approve() >> promotion  # a person may have to approve first (require_approval)
    t.report(promotion)


maniskill_openpi_sft()
