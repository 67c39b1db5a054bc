"""registry: each task's promotion history, and rolling `latest.json` back to an earlier entry.

Every change of `<root>/<env_id>/latest.json` (a promotion, or a rollback) adds one record under
`<root>/<env_id>/promotions/<UTC time>-<action>-<id>.json`: what latest became (checkpoint, verify artifact,
verdict, success figures, protocol, report), what it replaced, who did it (an Airflow run, or the user and
host of a CLI call) and when. Records are separate objects written once, so two runs promoting at the same
moment each add their own and nothing is read-modified-written; the history is their listing, newest first.

A rollback makes an earlier entry latest again (by default the one before the current, or the one whose
verify or checkpoint URI is named), through the same compare-and-swap as promote, and records itself. It
refuses entries whose checkpoint no longer exists in the store (a retention sweep keeps the artifacts of the
newest `keep_runs` records, see tasks/maintenance.py).

    python -m tasks.rollback history --env-id PickCube-v1 [--root ROOT]
    python -m tasks.rollback rollback --env-id PickCube-v1 [--to VERIFY_OR_CHECKPOINT_URI] [--root ROOT]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from tasks.core import cli
from tasks.core.promotions import history, record
from tasks.core.specs import get_spec
from tasks.core.stage import StageResult
from tasks.core.store import ArtifactStore, latest_uri

log = logging.getLogger(__name__)


class RollbackError(ValueError):
    """The rollback target does not exist in the history, or its checkpoint is gone."""


@dataclasses.dataclass(frozen=True)
class RollbackParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    to: str = ""  # a verify or checkpoint URI (or <train uri>@<step>) from the history; "": the entry latest replaced
    actor: str = ""  # who asks ("": the CLI's user@host); an Airflow task passes its dag and run id

    def validate(self) -> None:
        get_spec(self.env_id)


def choose(records: list[dict[str, Any]], current: dict[str, Any] | None, to: str) -> dict[str, Any]:
    """The entry a rollback makes latest."""
    entries = [r["entry"] for r in records if r.get("entry")]
    if to:
        for entry in entries:
            if to in (entry.get("verify"), entry.get("checkpoint"), entry.get("checkpoint_ref")):
                return entry
        known = sorted({e.get("verify") for e in entries if e.get("verify")})
        raise RollbackError(f"{to} is in no promotion record; the history has the verify artifacts {known}")
    if current is None:
        raise RollbackError("there is no latest to roll back from; promote a checkpoint first")
    # By the verification it replaced: two steps of one training run share their train artifact (`checkpoint`).
    # Entries written before `previous_verify` existed are matched by their checkpoint.
    for entry in entries:
        if current.get("previous_verify") and entry.get("verify") == current.get("previous_verify"):
            return entry
        if (
            not current.get("previous_verify")
            and current.get("previous")
            and entry.get("checkpoint") == current.get("previous")
        ):
            return entry
    raise RollbackError(
        f"the history has no entry for the checkpoint the current latest replaced "
        f"({current.get('previous') or 'none: it was the first promotion'}); name one with --to"
    )


def rollback(params: RollbackParams, root: str) -> StageResult:
    params.validate()
    t0 = time.monotonic()
    store = ArtifactStore(root)
    uri = latest_uri(store, params.env_id)
    for _ in range(20):
        current, version = store.read_json_versioned(uri)
        target = choose(history(store, params.env_id), current, params.to)
        if current and current.get("verify") == target.get("verify"):
            log.info(f"[rollback] {target.get('verify')} is latest already")
            break
        if store.read_manifest(target["checkpoint"]) is None:
            raise RollbackError(
                f"the checkpoint {target['checkpoint']} of that entry is no longer in the store "
                "(removed by retention); pick a newer entry or retrain"
            )
        entry = {
            **target,
            "promoted_at": time.time(),
            "previous": (current or {}).get("checkpoint"),
            "previous_verify": (current or {}).get("verify"),
            "rolled_back_from": (current or {}).get("verify"),
        }
        if store.replace_json(uri, entry, version):
            record(store, params.env_id, "rollback", entry, current, params.actor)
            log.info(
                f"[rollback] latest of {params.env_id} is {target['checkpoint']} again "
                f"(was {(current or {}).get('checkpoint')})"
            )
            break
        log.info(f"[rollback] {uri} changed while rolling back; deciding again")
    else:
        raise RuntimeError(f"{uri} kept changing during 20 rollback attempts; rerun")
    latest = store.read_json(uri) or {}
    return StageResult(
        uri=uri,
        digest="",
        cache_hit=False,
        seconds=time.monotonic() - t0,
        metrics={
            "latest_checkpoint": latest.get("checkpoint"),
            "latest_verify": latest.get("verify"),
            "rolled_back_from": latest.get("rolled_back_from"),
        },
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    cli.configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.rollback", description=cli.first_paragraph(__doc__))
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{history,rollback}",
        help="history: list the promotion records; rollback: restore an earlier entry",
    )
    for name, text in (
        ("history", "list the task's promotion records, newest first"),
        ("rollback", "make an earlier promoted checkpoint latest again"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument(
            "--root",
            default=cli.default_root(),
            help="artifact root URI (file:///dir or s3://bucket/prefix; default %(default)s)",
        )
        p.add_argument("--env-id", required=True, help="registered ManiSkill env id, e.g. PickCube-v1")
        if name == "rollback":
            p.add_argument(
                "--to",
                default="",
                help="verify or checkpoint URI (<train uri>@<step> for a kept checkpoint) of "
                "a history entry (default: the entry the current latest replaced)",
            )
    args = parser.parse_args(argv)
    if args.command == "history":
        get_spec(args.env_id)
        for r in history(ArtifactStore(args.root), args.env_id):
            e = r["entry"]
            print(
                json.dumps(
                    {
                        "at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"])),
                        "action": r["action"],
                        "by": r["by"],
                        "checkpoint": e.get("checkpoint_ref") or e.get("checkpoint"),
                        "verify": e.get("verify"),
                        "success_rate": e.get("success_rate"),
                        "verdict": e.get("verdict"),
                    }
                )
            )
        return 0
    result = rollback(RollbackParams(env_id=args.env_id, to=args.to), root=args.root)
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
