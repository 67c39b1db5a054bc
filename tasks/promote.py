"""promote: the gate in front of `<root>/<env_id>/latest.json`, the pointer deployments read.

A verified checkpoint replaces `latest` only when
1. its verdict is `passed` (thresholds set and met; `unchecked` and `failed` never promote), and
2. there is no current latest, or the current one was evaluated under the same protocol (env kwargs,
   seeds, episodes, step limit, replan interval) and the candidate is better by the rule below.

The rule: the candidate's closed-loop successes must beat the current latest's by a one-sided Fisher exact
test at alpha = 0.05 (scipy's `fisher_exact`, alternative "greater"). Both were measured on the same seeds,
so a candidate that merely ties, or wins by what the episode count cannot tell from noise, does not replace
a deployed policy. With n episodes each, the test can only succeed if n is large enough: at n = 2 even 2/2
against 0/2 gives p = 0.17, at n = 50 (the production profile) 45/50 beats 35/50 (p = 0.01). When the
episode count makes a promotion impossible, the reason says so.

Each promotion adds a record to the task's history (tasks/rollback.py: who, when, what, what it replaced),
from which `python -m tasks.rollback rollback` or the rollback DAG restores an earlier entry.

With `require_approval` (the DAGs' approve task, Airflow's human-in-the-loop step, sets it), a candidate that
passes all of the above still waits for a person: it is promoted only with `approved_by` (who approved), and
`rejected_by` keeps latest as it is. `preview` tells the approve task whether there is anything to ask about,
so nobody is asked to approve a candidate the gate would refuse anyway.

Otherwise `latest.json` is left untouched and the result says why. Promoting the same verify artifact again
is a no-op, so reruns are safe. `force` (an operator's rollback) skips the comparison, not the verdict.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tasks.core import cli
from tasks.core.params import PromoteParams
from tasks.core.promotions import record
from tasks.core.protocol import protocol_differences
from tasks.core.stage import StageResult, require
from tasks.core.store import ArtifactStore, latest_uri

log = logging.getLogger(__name__)

ALPHA = 0.05  # significance level of the promotion test


def better_p_value(candidate: tuple[int, int], current: tuple[int, int]) -> float:
    """One-sided Fisher exact p-value that the candidate's success probability exceeds the current one's."""
    from scipy.stats import fisher_exact

    (k1, n1), (k0, n0) = candidate, current
    return float(fisher_exact([[k1, n1 - k1], [k0, n0 - k0]], alternative="greater").pvalue)


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, force: bool) -> tuple[bool, str]:
    verdict = candidate.get("verdict")
    if verdict != "passed":
        return (
            False,
            f"verification {verdict or 'unknown'}: only a passed verification is promoted ({candidate.get('verdict_reason')})",
        )
    if current is None:
        return True, "no current latest"
    if current.get("verify") == candidate.get("verify"):
        return False, "already latest"
    if force:
        return True, "forced"
    differences = protocol_differences(candidate.get("protocol"), current.get("protocol"))
    if differences:
        return False, (
            "not comparable with the current latest, evaluated under another protocol ("
            + "; ".join(differences[:5])
            + "): re-verify the current latest's checkpoint with this run's "
            "evaluation settings, or promote with force=true"
        )
    k1, n1 = candidate.get("successes") or 0, candidate.get("episodes") or 0
    k0, n0 = current.get("successes") or 0, current.get("episodes") or 0
    p = better_p_value((k1, n1), (k0, n0))
    if p < ALPHA:
        return (
            True,
            f"better than the current latest: {k1}/{n1} vs {k0}/{n0} successes (one-sided Fisher p={p:.3g} < {ALPHA})",
        )
    if better_p_value((n1, n1), (k0, n0)) >= ALPHA:
        return False, (
            f"kept the current latest ({k0}/{n0}): with {n1} episodes not even {n1}/{n1} could be shown better "
            f"(one-sided Fisher p >= {ALPHA}); evaluate more episodes"
        )
    return (
        False,
        f"not shown better than the current latest: {k1}/{n1} vs {k0}/{n0} successes (one-sided Fisher p={p:.3g} >= {ALPHA})",
    )


def approval_gate(promoted: bool, reason: str, params: PromoteParams) -> tuple[bool, str]:
    """The human step after the automatic rule: only a candidate the rule would promote waits for it."""
    if not promoted or not params.require_approval or params.approved_by:
        return promoted, reason
    if params.rejected_by:
        return False, f"rejected by {params.rejected_by} (the rule would have promoted it: {reason})"
    return False, f"awaiting a person's approval, which this run did not get (the rule would promote it: {reason})"


def _candidate(store: ArtifactStore, params: PromoteParams, verification: str) -> dict[str, Any]:
    manifest = require(store, verification, stage="verify", env_id=params.env_id, what="verification")
    m = manifest.metrics
    # `checkpoint` is the train artifact (what retention and rollback keep); `step` which of its kept checkpoints
    # (None: the final one); `checkpoint_ref` both in one (`<uri>@<step>`), as serve and warm starts take it.
    lineage = m["lineage"]
    return {
        "env_id": params.env_id,
        "verify": verification,
        "checkpoint": lineage["checkpoint"],
        "step": lineage.get("step"),
        "checkpoint_ref": lineage.get("checkpoint_ref") or lineage["checkpoint"],
        "report": f"{store.files_uri(manifest)}/report.html",
        "verdict": m.get("verdict"),
        "verdict_reason": m.get("verdict_reason"),
        "checks": m.get("checks"),
        "success_rate": m.get("success_rate"),
        "successes": m.get("successes"),
        "episodes": m.get("episodes"),
        "success_rate_ci95": m.get("success_rate_ci95"),
        "action_mae": m.get("action_mae"),
        "protocol": m.get("protocol"),
        "_digest": manifest.digest,
    }


def preview(params: PromoteParams, root: str, verification: str) -> dict[str, Any]:
    """What the automatic rule says about this candidate now, without moving anything (for the approval step)."""
    params.validate()
    store = ArtifactStore(root)
    candidate = _candidate(store, params, verification)
    current = store.read_json(latest_uri(store, params.env_id))
    promotable, reason = decide(candidate, current, params.force)
    return {
        "promotable": promotable,
        "reason": reason,
        "candidate": {k: v for k, v in candidate.items() if k[0] != "_"},
        "current": current,
    }


def promote(params: PromoteParams, root: str, verification: str) -> StageResult:
    params.validate()
    t0 = time.monotonic()
    store = ArtifactStore(root)
    candidate = _candidate(store, params, verification)
    digest = candidate.pop("_digest")
    uri = latest_uri(store, params.env_id)
    # Compare-and-swap: a run promoting the same task at the same moment makes our write fail, and we decide
    # again against what it wrote, so the better checkpoint stays latest whichever run finishes last.
    for _ in range(20):
        current, version = store.read_json_versioned(uri)
        promoted, reason = approval_gate(*decide(candidate, current, params.force), params)
        if not promoted:
            break
        entry = {
            **candidate,
            "promoted_at": time.time(),
            "previous": (current or {}).get("checkpoint"),
            "previous_verify": (current or {}).get("verify"),
            "approved_by": params.approved_by or None,
        }
        if store.replace_json(uri, entry, version):
            record(store, params.env_id, "promote", entry, current, params.actor)
            break
        log.info(f"[promote] {uri} changed while deciding (another run promoted); deciding again")
    else:
        raise RuntimeError(f"{uri} kept changing during 20 promotion attempts; rerun promote")
    log.info(f"[promote] {'promoted' if promoted else 'kept current latest'}: {reason}")
    latest = store.read_json(uri)
    return StageResult(
        uri=uri,
        digest=digest,
        cache_hit=not promoted,
        metrics={
            "promoted": promoted,
            "reason": reason,
            "approval_required": params.require_approval,
            "approved_by": params.approved_by or None,
            "rejected_by": params.rejected_by or None,
            "latest_checkpoint": (latest or {}).get("checkpoint"),
            "verdict": candidate["verdict"],
            "success_rate": candidate["success_rate"],
        },
        seconds=time.monotonic() - t0,
    )


main = cli.cli(__doc__, PromoteParams, promote, inputs={"verification": False})

if __name__ == "__main__":
    raise SystemExit(main())
