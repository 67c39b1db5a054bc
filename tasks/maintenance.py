"""maintenance: keep the artifact store from growing forever (orphan sweep, retention, storage report).

Every run adds artifacts (a tiny checkpoint is 662 MB, a pi0 LoRA one several GB) and nothing else removes
them. This stage, run daily by the `maniskill_openpi_maintenance` DAG or by hand, does four things:

1. **Orphan payloads.** A publish uploads into `<key>/payload-<UTC time>-<id>/` and then creates the
   manifest that names it. A payload folder no manifest names is left over from a killed upload or a lost
   race. It is deleted once its time stamp is older than `grace_hours`, so a publish that is still uploading
   (younger than that) is never touched.
2. **Retention.** Kept: every artifact reachable, through manifest parents, from each task's `latest.json`
   (its checkpoint and verify artifact, and the checkpoint it replaced), from the `keep_runs` newest promotion
   records (`promotions/`, what a rollback can restore) and the `keep_runs` newest run
   reports per task (`runs/<run_id>/run.json`), and from every artifact created or used (`in-use.json`,
   written by a cache hit and refreshed while a stage reads its inputs) within `grace_hours`: it may belong to
   a run in progress, which reuses old artifacts as well as making new ones. Everything else is deleted, oldest first, children before parents, and each one
   manifest first, so it stops being visible before its files go. Because the kept set is closed under
   parents, a kept artifact's lineage is never broken, even when a sweep is interrupted. Run report folders
   beyond the `keep_runs` newest are deleted with them.
3. **Resume points** (`train-progress/<key>/<step>/`, each a full checkpoint): training deletes its own
   once it publishes; those of trainings killed and never rerun are deleted when their newest checkpoint is
   is older than `progress_days` (a training that resumes renews the time of the point it resumes from).
4. **Storage report**: artifacts and bytes per task and stage, before and after.

`dry_run` (the CLI's default) reports what would be removed and removes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

from tasks.core import cli
from tasks.core.promotions import HISTORY
from tasks.core.stage import StageResult
from tasks.core.store import (
    IN_USE,
    IN_USE_REFRESH_SECONDS,
    MANIFEST,
    PAYLOAD_PREFIX,
    PAYLOAD_TIME_FORMAT,
    ArtifactStore,
    Manifest,
)

log = logging.getLogger(__name__)

PROGRESS = "train-progress"  # training's resume points (tasks.train.PROGRESS_STAGE; a stage is not imported here)
NOT_ARTIFACTS = ("runs", "latest.json", PROGRESS, HISTORY)  # per-task entries that are not stage folders


@dataclasses.dataclass(frozen=True)
class MaintenanceParams:
    keep_runs: int = 5  # newest run reports per task whose artifacts are kept (besides latest's)
    grace_hours: float = 24.0  # payloads and artifacts younger (or used more recently) are never removed
    progress_days: float = 14.0  # resume points of a training with no checkpoint for this long are removed
    dry_run: bool = True  # only report what would be deleted (the CLI's --apply turns it off)

    def validate(self) -> None:
        if not 1 <= self.keep_runs <= 10_000:
            raise ValueError(f"keep_runs must be 1..10000, got {self.keep_runs}")
        if not 0 <= self.grace_hours <= 24 * 365:
            raise ValueError(f"grace_hours must be 0..8760, got {self.grace_hours}")
        if 0 < self.grace_hours * 3600 < 2 * IN_USE_REFRESH_SECONDS:
            # a building stage refreshes its inputs' marks every IN_USE_REFRESH_SECONDS (late by storage retries at
            # worst): a shorter grace could sweep them between two refreshes. 0 stays allowed: "nothing is running",
            # for tests and by hand.
            raise ValueError(
                f"grace_hours must be 0 or at least {2 * IN_USE_REFRESH_SECONDS / 3600:g} h (twice the "
                f"in-use refresh interval), got {self.grace_hours}"
            )
        if not 1 <= self.progress_days <= 3650:
            raise ValueError(f"progress_days must be 1..3650, got {self.progress_days}")


@dataclasses.dataclass
class Entry:
    """One key folder of the store: an artifact (with its manifest) or the remains of a failed publish."""

    uri: str
    env_id: str
    stage: str
    manifest: Manifest | None
    payloads: list[str]  # payload folder names under the key
    used_at: float | None = None  # last `in-use.json` mark

    @property
    def last_active(self) -> float:
        return max(self.manifest.created_at if self.manifest else 0.0, self.used_at or 0.0)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.manifest.files) if self.manifest else 0


def payload_time(name: str) -> float | None:
    """The UTC time stamp in a payload folder's name (`payload-20261201T135318-5a8fbdd3`)."""
    try:
        stamp = name[len(PAYLOAD_PREFIX) :].split("-", 1)[0]
        return datetime.strptime(stamp, PAYLOAD_TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def scan(store: ArtifactStore) -> list[Entry]:
    entries = []
    for env_id in store.children(store.root):
        if env_id.startswith("."):
            continue
        for stage in store.children(f"{store.root}/{env_id}"):
            if stage in NOT_ARTIFACTS or stage.startswith("."):
                continue
            for key in store.children(f"{store.root}/{env_id}/{stage}"):
                uri = f"{store.root}/{env_id}/{stage}/{key}"
                children = store.children(uri)
                manifest = store.read_manifest(uri) if MANIFEST in children else None
                entries.append(
                    Entry(
                        uri,
                        env_id,
                        stage,
                        manifest,
                        [c for c in children if c.startswith(PAYLOAD_PREFIX)],
                        store.in_use_at(uri) if IN_USE in children else None,
                    )
                )
    return entries


@dataclasses.dataclass
class ResumePoints:
    """One training's resume points: `<env>/train-progress/<key>/` with its completed checkpoint steps."""

    uri: str
    env_id: str
    saved_at: float | None  # newest completed checkpoint (None: none completed, or written before it was recorded)
    steps: list[str]


def scan_progress(store: ArtifactStore) -> list[ResumePoints]:
    found = []
    for env_id in store.children(store.root):
        if env_id.startswith("."):
            continue
        for key in store.children(f"{store.root}/{env_id}/{PROGRESS}"):
            uri = f"{store.root}/{env_id}/{PROGRESS}/{key}"
            markers = {step: m for step, m in store.complete_trees(uri).items() if step.isdigit()}
            times = [float(m["saved_at"]) for m in markers.values() if m.get("saved_at")]
            found.append(ResumePoints(uri, env_id, max(times) if times else None, sorted(markers, key=int)))
    return found


def runs_by_task(store: ArtifactStore, env_ids: set[str]) -> dict[str, list[tuple[float, str, dict]]]:
    """Each task's run reports, newest first: (finished time, run folder URI, run.json)."""
    out: dict[str, list[tuple[float, str, dict]]] = {}
    for env_id in sorted(env_ids):
        runs = []
        base = f"{store.root}/{env_id}/runs"
        for name in store.children(base):
            data = store.read_json(f"{base}/{name}/run.json")
            if isinstance(data, dict):
                # reports written before run.json recorded its time count as the oldest
                runs.append((float(data.get("finished_at") or 0.0), f"{base}/{name}", data))
        out[env_id] = sorted(runs, key=lambda r: r[0], reverse=True)
    return out


def roots(store: ArtifactStore, env_ids: set[str], runs: dict[str, list], keep_runs: int) -> dict[str, str]:
    """The URIs retention starts from, each with why it is kept."""
    keep: dict[str, str] = {}
    for env_id in sorted(env_ids):
        latest = store.read_json(f"{store.root}/{env_id}/latest.json") or {}
        for field in ("checkpoint", "verify", "previous"):
            if latest.get(field):
                keep.setdefault(latest[field], f"latest.json {field}")
        # The newest promotion records: what a rollback can restore (tasks/rollback.py).
        base = f"{store.root}/{env_id}/{HISTORY}"
        for name in sorted(store.children(base), reverse=True)[:keep_runs]:  # names start with the UTC time
            record = store.read_json(f"{base}/{name}") or {}
            for field in ("checkpoint", "verify"):
                if (record.get("entry") or {}).get(field):
                    keep.setdefault(record["entry"][field], f"promotion record {name}")
        for _, _run_uri, data in runs.get(env_id, [])[:keep_runs]:
            for row in data.get("stages", []):
                if row.get("uri", "").startswith(f"{store.root}/{env_id}/") and not row["uri"].endswith("latest.json"):
                    keep.setdefault(row["uri"], f"run {data.get('run_id')}")
            if data.get("verify"):
                keep.setdefault(data["verify"], f"run {data.get('run_id')}")
    return keep


def storage_report(entries: list[Entry]) -> dict[str, dict[str, dict[str, int]]]:
    report: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"artifacts": 0, "bytes": 0})
    )
    for e in entries:
        if e.manifest is not None:
            row = report[e.env_id][e.stage]
            row["artifacts"] += 1
            row["bytes"] += e.bytes
    return {env: dict(stages) for env, stages in sorted(report.items())}


def _deletion_order(doomed: dict[str, Entry]) -> list[Entry]:
    """Children before parents (among the doomed), then oldest first."""
    children: dict[str, set[str]] = defaultdict(set)
    for uri, e in doomed.items():
        for parent in e.manifest.parents:
            if parent in doomed:
                children[parent].add(uri)
    order, done = [], set()

    def visit(uri: str) -> None:
        if uri in done:
            return
        done.add(uri)
        for child in sorted(children[uri], key=lambda u: doomed[u].manifest.created_at):
            visit(child)
        order.append(doomed[uri])

    for uri in sorted(doomed, key=lambda u: doomed[u].manifest.created_at):
        visit(uri)
    return order


def maintain(params: MaintenanceParams, root: str) -> StageResult:
    params.validate()
    t0 = time.monotonic()
    now = time.time()
    grace = params.grace_hours * 3600
    store = ArtifactStore(root)
    entries = scan(store)
    before = storage_report(entries)
    by_uri = {e.uri: e for e in entries if e.manifest is not None}
    env_ids = {e.env_id for e in entries} | {c for c in store.children(store.root) if not c.startswith(".")}
    runs = runs_by_task(store, env_ids)
    keep = roots(store, env_ids, runs, params.keep_runs)
    for uri, e in by_uri.items():
        if uri not in keep and now - e.last_active < grace:
            keep[uri] = f"created or used within {params.grace_hours:g} h"
    # Close the kept set under parents: a kept artifact's whole lineage stays.
    reason = dict(keep)
    stack = list(keep)
    while stack:
        uri = stack.pop()
        entry = by_uri.get(uri)
        for parent in entry.manifest.parents if entry else ():
            if parent not in reason:
                reason[parent] = f"parent of {uri}"
                stack.append(parent)
    doomed = {uri: e for uri, e in by_uri.items() if uri not in reason}
    orphans = []
    for e in entries:
        named = e.manifest.payload if e.manifest else None
        for name in e.payloads:
            stamp = payload_time(name)
            if name != named and stamp is not None and now - stamp >= grace:
                orphans.append(f"{e.uri}/{name}")
    stale_runs = [run_uri for env_runs in runs.values() for _, run_uri, _ in env_runs[params.keep_runs :]]
    stale_progress = [
        p for p in scan_progress(store) if p.saved_at is not None and now - p.saved_at >= params.progress_days * 86400
    ]

    removed, freed = [], 0
    verb = "would remove" if params.dry_run else "removing"
    spared: set[str] = set()
    for e in _deletion_order(doomed):
        used = store.in_use_at(e.uri)
        if e.uri in spared or (used is not None and time.time() - used < grace):
            # Marked since the scan (a run reused it meanwhile): keep it and its lineage. Parents come later in
            # this order, so sparing them here is in time.
            stack = [e.uri]
            while stack:
                uri = stack.pop()
                if uri not in spared:
                    spared.add(uri)
                    stack += list(doomed[uri].manifest.parents) if uri in doomed else []
            log.info(f"[maintenance] keeping {e.uri}: marked in use during this sweep, or a parent of one")
            continue
        log.info(
            f"[maintenance] {verb} {e.uri} ({e.bytes / 2**20:.1f} MB, created "
            f"{datetime.fromtimestamp(e.manifest.created_at, UTC):%Y-%m-%d %H:%M} UTC)"
        )
        if not params.dry_run:
            store.remove(f"{e.uri}/{MANIFEST}")  # invisible first, then the files
            store.remove(e.uri)
        removed.append(e.uri)
        freed += e.bytes
    for path in orphans:
        log.info(f"[maintenance] {verb} orphan payload {path}")
        if not params.dry_run:
            store.remove(path)
    for p in stale_progress:
        log.info(
            f"[maintenance] {verb} resume points {p.uri} (steps {', '.join(p.steps)}; newest saved "
            f"{datetime.fromtimestamp(p.saved_at, UTC):%Y-%m-%d %H:%M} UTC)"
        )
        if not params.dry_run:
            store.remove(p.uri)
    for run_uri in stale_runs:
        log.info(f"[maintenance] {verb} run report {run_uri}")
        if not params.dry_run:
            store.remove(run_uri)
    for uri in sorted(u for u in reason if u in by_uri):
        log.info(f"[maintenance] keeping {uri}: {reason[uri]}")
    after = storage_report([e for e in entries if e.uri not in set(removed)]) if not params.dry_run else before
    summary = {
        "dry_run": params.dry_run,
        "kept": sorted(u for u in reason if u in by_uri),
        "removed": removed,
        "orphan_payloads": orphans,
        "run_reports_removed": stale_runs,
        "resume_points_removed": [p.uri for p in stale_progress],
        "bytes_freed": freed,
        "storage_before": before,
        "storage_after": after,
    }
    for env, stages in before.items():
        for stage, row in stages.items():
            left = after.get(env, {}).get(stage) or {"artifacts": 0, "bytes": 0}
            log.info(
                f"[maintenance] {env:<18} {stage:<10} {row['artifacts']:>4} artifacts {row['bytes'] / 2**20:>10.1f} MB"
                f"  -> {left['artifacts']:>4} artifacts {left['bytes'] / 2**20:>10.1f} MB"
            )
    log.info(
        f"[maintenance] {'would free' if params.dry_run else 'freed'} {freed / 2**20:.1f} MB: "
        f"{len(removed)} artifacts, {len(orphans)} orphan payloads, {len(stale_runs)} run reports, "
        f"{len(stale_progress)} resume point folders"
    )
    return StageResult(
        uri=store.root,
        digest="",
        cache_hit=False,
        seconds=time.monotonic() - t0,
        metrics={k: v for k, v in summary.items() if k not in ("kept",)} | {"kept": len(summary["kept"])},
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    cli.configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.maintenance", description=cli.first_paragraph(__doc__))
    parser.add_argument(
        "--root",
        default=cli.default_root(),
        help="artifact root URI (file:///abs/dir or s3://bucket/prefix; default %(default)s)",
    )
    parser.add_argument(
        "--keep-runs",
        type=int,
        default=MaintenanceParams.keep_runs,
        help="newest run reports per task whose artifacts are kept, besides latest's (default %(default)s)",
    )
    parser.add_argument(
        "--grace-hours",
        type=float,
        default=MaintenanceParams.grace_hours,
        help="artifacts created or used, and payload folders written, more recently are kept "
        "(0, or at least 1 h: twice the in-use refresh; default %(default)s)",
    )
    parser.add_argument(
        "--progress-days",
        type=float,
        default=MaintenanceParams.progress_days,
        help="resume points of a training with no checkpoint for this long are removed (default %(default)s)",
    )
    parser.add_argument(
        "--apply", action="store_true", help="delete what the sweep finds (default: a dry run that only reports it)"
    )
    args = parser.parse_args(argv)
    result = maintain(
        MaintenanceParams(
            keep_runs=args.keep_runs,
            grace_hours=args.grace_hours,
            progress_days=args.progress_days,
            dry_run=not args.apply,
        ),
        root=args.root,
    )
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
