"""select: of one training run's kept checkpoints, the one that succeeds most in closed loop is the candidate.

Training loss does not track rollout success (openpi #544; a fork reports 0 % on PickCube after a 95 %
loss drop), so the last checkpoint is not necessarily the best. The train stage keeps a checkpoint every
`keep_period` steps; verify evaluates each one with the same protocol (in Airflow: mapped over the steps on
the GPU queue, several GPUs at once); this stage reads those verify artifacts and ranks them:

1. a verdict other than `failed` first (a candidate that failed a check or a threshold cannot be promoted);
2. more closed-loop successes (`success_once`; every candidate played the same seeds);
3. on a tie, the lower held-out validation loss at that step (training logs it at `val_interval`);
4. on a tie still, the later step.

Every verification must be of the same train artifact and under the same protocol, or the comparison
means nothing: a mix is refused. The artifact holds `selection.json` (one row per checkpoint) and
`selection.png` (success with its 95 % interval and validation loss against step); the run report shows
both. The selected verification is what the approval step and promote then judge, as before.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.params import SelectParams
from tasks.core.stage import StageResult, require, run_stage
from tasks.core.store import ArtifactStore, Manifest

log = logging.getLogger(__name__)

STAGE = "select"
CODE_VERSION = "1"


class SelectError(ValueError):
    """The verifications cannot be compared; the message says why and what to do."""


def candidate_row(manifest: Manifest) -> dict[str, Any]:
    """One checkpoint's figures, from its verify artifact's metrics."""
    m = manifest.metrics
    return {
        "step": int(m.get("checkpoint_step") or 0),
        "verify": manifest.uri,
        "verdict": m.get("verdict"),
        "successes": m.get("successes"),
        "episodes": m.get("episodes"),
        "success_rate": m.get("success_rate"),
        "ci95": m.get("success_rate_ci95"),
        "val_loss": m.get("val_loss_at_step"),
        "action_mae": m.get("action_mae"),
        "checkpoint": (m.get("lineage") or {}).get("checkpoint_ref"),
    }


def rank_key(row: dict[str, Any]) -> tuple:
    """Sorts the best candidate first (see the module docstring for the order and why)."""
    loss = row.get("val_loss")
    return (
        row.get("verdict") == "failed",
        -(row.get("successes") or 0),
        loss if loss is not None and math.isfinite(loss) else math.inf,
        -row["step"],
    )


def choose(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The best row and the reason in words."""
    ranked = sorted(rows, key=rank_key)
    best = ranked[0]
    if len(rows) == 1:
        return best, f"one checkpoint evaluated (step {best['step']}): it is the candidate"
    runner_up = ranked[1]
    won_by = (
        "verdict"
        if (best["verdict"] == "failed") != (runner_up["verdict"] == "failed")
        else "successes"
        if (best.get("successes") or 0) != (runner_up.get("successes") or 0)
        else "validation loss"
        if rank_key(best)[2] != rank_key(runner_up)[2]
        else "the later step"
    )
    return best, (
        f"step {best['step']} of {len(rows)} checkpoints: {best.get('successes')}/{best.get('episodes')} "
        f"closed-loop successes, validation loss {best.get('val_loss')}; ahead of step {runner_up['step']} "
        f"({runner_up.get('successes')}/{runner_up.get('episodes')}, validation loss {runner_up.get('val_loss')}) "
        f"by {won_by}"
    )


def check_comparable(manifests: list[Manifest], env_id: str) -> None:
    from tasks.core.protocol import protocol_differences

    for m in manifests:
        if m.stage != "verify" or m.env_id != env_id:
            raise SelectError(
                f"{m.uri} is a {m.stage} artifact of {m.env_id}; select takes verify artifacts of {env_id}"
            )
    first = manifests[0].metrics
    for m in manifests[1:]:
        if m.metrics["lineage"]["checkpoint"] != first["lineage"]["checkpoint"]:
            raise SelectError(
                f"{m.uri} verified {m.metrics['lineage']['checkpoint']}, not "
                f"{first['lineage']['checkpoint']}: select compares the checkpoints of one training run"
            )
        differences = protocol_differences(m.metrics.get("protocol"), first.get("protocol"))
        if differences:
            raise SelectError(
                f"{m.uri} was evaluated under another protocol than {manifests[0].uri} "
                f"({'; '.join(differences[:5])}): verify every checkpoint with the same settings"
            )
    steps = [int(m.metrics.get("checkpoint_step") or 0) for m in manifests]
    if len(set(steps)) != len(steps):
        raise SelectError(
            f"the verifications name step(s) {sorted({s for s in steps if steps.count(s) > 1})} more than "
            "once: give one verification per checkpoint"
        )


def select(params: SelectParams, root: str, verifications: list[str]) -> StageResult:
    params.validate()
    if not verifications:
        raise SelectError("no verifications given: select needs one verify artifact per kept checkpoint")
    store = ArtifactStore(root)
    manifests = [
        require(store, uri, stage="verify", env_id=params.env_id, what="verification") for uri in verifications
    ]
    check_comparable(manifests, params.env_id)
    manifests.sort(key=lambda m: int(m.metrics.get("checkpoint_step") or 0))
    rows = [candidate_row(m) for m in manifests]
    best, reason = choose(rows)
    for row in rows:
        row["selected"] = row is best

    def build(out: Path) -> dict:
        from tasks.core import report

        (out / "selection.json").write_text(json.dumps({"reason": reason, "candidates": rows}, indent=2))
        figure = report.selection_figure(rows)
        if figure:
            (out / "selection.png").write_bytes(base64.b64decode(figure))
        log.info(f"[select] {reason}")
        return {
            "verify": best["verify"],
            "step": best["step"],
            "checkpoint": best["checkpoint"],
            "reason": reason,
            "candidates": [
                {k: r[k] for k in ("step", "successes", "episodes", "val_loss", "verdict", "selected")} for r in rows
            ],
        }

    return run_stage(
        store, env_id=params.env_id, stage=STAGE, code_version=CODE_VERSION, params={}, parents=manifests, build=build
    )


main = cli.cli(__doc__, SelectParams, select, inputs={"verifications": True})

if __name__ == "__main__":
    raise SystemExit(main())
