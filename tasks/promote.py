"""promote: the gate in front of `<root>/<env_id>/latest.json`, the pointer deployments read.

A verified checkpoint replaces `latest` only when its verification passed and its closed-loop success
rate is no worse than the current latest's. Otherwise `latest.json` is left untouched and the result
says why. Promoting the same verify artifact again is a no-op, so reruns are safe.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tasks import common
from tasks.artifacts import ArtifactStore, StageResult, latest_uri
from tasks.specs import get_spec


@dataclasses.dataclass(frozen=True)
class PromoteParams:
    env_id: str
    force: bool = False  # promote even when worse than the current latest (an operator's rollback)

    def validate(self) -> None:
        get_spec(self.env_id)


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, force: bool) -> tuple[bool, str]:
    if not candidate.get("passed"):
        return False, f"verification failed: {candidate.get('checks')}"
    if current is None:
        return True, "no current latest"
    if current.get("verify") == candidate.get("verify"):
        return False, "already latest"
    new, old = candidate.get("success_rate"), current.get("success_rate")
    if force:
        return True, "forced"
    if old is not None and (new is None or new < old):
        return False, f"closed-loop success {new} is worse than the current latest's {old}"
    return True, f"closed-loop success {new} >= current {old}"


def promote(params: PromoteParams, root: str, verification: str) -> StageResult:
    params.validate()
    t0 = time.monotonic()
    store = ArtifactStore(root)
    manifest = store.require(verification)
    if manifest.stage != "verify" or manifest.env_id != params.env_id:
        raise ValueError(f"{verification} is a {manifest.stage} artifact of {manifest.env_id}; promote takes a verify artifact of {params.env_id}")
    m = manifest.metrics
    candidate = {"env_id": params.env_id, "verify": verification, "checkpoint": m["lineage"]["checkpoint"],
                 "report": f"{store.files_uri(manifest)}/report.html", "passed": m.get("passed"), "checks": m.get("checks"),
                 "success_rate": m.get("success_rate"), "action_mae": m.get("action_mae")}
    uri = latest_uri(store, params.env_id)
    # Compare-and-swap: a run promoting the same task at the same moment makes our write fail, and we decide
    # again against what it wrote, so the better checkpoint stays latest whichever run finishes last.
    for _ in range(20):
        current, version = store.read_json_versioned(uri)
        promoted, reason = decide(candidate, current, params.force)
        if not promoted:
            break
        entry = {**candidate, "promoted_at": time.time(), "previous": (current or {}).get("checkpoint")}
        if store.replace_json(uri, entry, version):
            break
        common.log(f"[promote] {uri} changed while deciding (another run promoted); deciding again")
    else:
        raise RuntimeError(f"{uri} kept changing during 20 promotion attempts; rerun promote")
    common.log(f"[promote] {'promoted' if promoted else 'kept current latest'}: {reason}")
    latest = store.read_json(uri)
    return StageResult(uri=uri, digest=manifest.digest, cache_hit=not promoted,
                       metrics={"promoted": promoted, "reason": reason, "latest_checkpoint": (latest or {}).get("checkpoint"),
                                "success_rate": candidate["success_rate"]},
                       seconds=time.monotonic() - t0)


main = common.cli(__doc__.splitlines()[0], PromoteParams, promote, inputs={"verification": False})

if __name__ == "__main__":
    raise SystemExit(main())
