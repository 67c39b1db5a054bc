"""The human approval in front of `latest`: Airflow's human-in-the-loop operator, asked only when it matters.

`PromotionApproval` stands between confirm (the selected checkpoint's verification) and promote in both DAGs. With the run setting
`require_approval` off and no `PIPELINE_REQUIRE_APPROVAL=1` in the deployment (which no run's conf can
override), it returns at once. With it on, it first asks promote's own rule (`tasks.promote.preview`) whether the candidate would
replace latest: if not (a failed verdict, not shown better, another protocol), nobody is asked and promote
refuses it as usual. Otherwise the task waits in Airflow's *Required Actions* (the `awaiting_input` state: no
worker slot, no triggerer) with the candidate's figures and the incumbent's beside them; Approve or Reject
is recorded, and no answer within `approval_timeout_hours` counts as Reject (the operator's default). Promote
reads the answer from this task's result, so the promotion history names the person who approved.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

APPROVE, REJECT = "Approve", "Reject"


def _rate(entry: dict | None) -> str:
    if not entry:
        return "none"
    ci = entry.get("success_rate_ci95") or [None, None]
    ci_text = f", 95 % CI {ci[0]:.0%}-{ci[1]:.0%}" if ci[0] is not None else ""
    return f"{entry.get('successes')}/{entry.get('episodes')} closed-loop successes{ci_text}"


def approval_body(preview: dict[str, Any]) -> str:
    """What the person approving sees (Markdown): the candidate, the incumbent and why the rule would promote."""
    candidate, current = preview["candidate"], preview["current"]
    lines = [
        f"**Candidate**: `{candidate.get('checkpoint_ref') or candidate['checkpoint']}`: {_rate(candidate)} "
        f"(verdict {candidate['verdict']})",
        "**Current latest**: " + (f"`{current['checkpoint']}`: {_rate(current)}" if current else "none"),
        f"**The promotion rule**: {preview['reason']}",
        f"**Verification report**: `{candidate['report']}`",
        "Approve moves latest (and the policy asset) to the candidate; Reject keeps the current latest. "
        "No answer in time counts as Reject.",
    ]
    return "\n\n".join(lines)


class PromotionApproval(HITLOperator):
    """Approve or Reject a candidate the promotion rule would promote; a no-op when the run needs no approval."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject="Promote a new policy?", options=[APPROVE, REJECT], defaults=[REJECT], multiple=False, **kwargs
        )

    def execute(self, context):
        from tasks.airflow_tasks.glue import bind_s3_connection
        from tasks.airflow_tasks.xcom import pull, run_config
        from tasks.promote import preview

        ti = context["ti"]
        config = run_config(ti)
        params = config.promote_params()
        if not params.require_approval:
            return {"required": False, "asked": False, "reason": "the run does not require approval"}
        bind_s3_connection(config.s3_conn_id)
        seen = preview(params, root=config.artifact_root, verification=pull(ti, "confirm")["uri"])
        if not seen["promotable"]:
            self.log.info("Not asking for approval: the promotion rule refuses the candidate (%s)", seen["reason"])
            return {"required": True, "asked": False, "reason": seen["reason"]}
        self.subject = f"Promote a new {config.env_id} policy? {_rate(seen['candidate'])}"
        self.body = approval_body(seen)
        self.response_timeout = datetime.timedelta(hours=config.approval_timeout_hours)
        return super().execute(context)  # parks the task until a person answers (or the timeout picks Reject)

    def execute_complete(self, context, event: dict[str, Any]) -> dict:
        answer = super().execute_complete(context, event)
        user = answer.get("responded_by_user") or {}
        chosen = answer["chosen_options"][0]
        by = user.get("name") or user.get("id") or "timeout"
        self.log.info("%s by %s", chosen, by)
        return {
            "required": True,
            "asked": True,
            "approved": chosen == APPROVE,
            "by": by,
            "at": str(answer.get("responded_at")),
        }


def approval_answer(result: dict | None) -> dict[str, str]:
    """The approve task's result as promote's params: who approved or rejected ({} when nobody was asked)."""
    if not result or not result.get("asked"):
        return {}
    return {"approved_by": result["by"]} if result.get("approved") else {"rejected_by": result["by"]}
