"""Running a stage against the store: its key, the cache check, building, publishing, and what it returns.

`run_stage` is the one path every stage takes: the key hashes (stage, code version, params, parents' digests),
so the same inputs are a cache hit; otherwise the stage builds into a scratch folder while its inputs are marked
in use, and the result is published with the tool versions that made it. `require` is the one check of a stage's
input artifacts: complete, from the stage it expects, for the task it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.core.store import IN_USE_REFRESH_SECONDS, ArtifactError, ArtifactStore, Manifest, list_files, work_dir

log = logging.getLogger(__name__)


_TRACKED_DISTRIBUTIONS = ("mani-skill", "sapien", "h5py", "numpy", "lerobot", "rpent-openpi", "jax", "flax", "torch")


def stage_key(stage: str, code_version: str, params: dict[str, Any], parent_digests: Sequence[str]) -> str:
    payload = json.dumps(
        {"stage": stage, "code_version": code_version, "params": params, "parents": list(parent_digests)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TRACKED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage returns: small enough for XCom (URIs and metrics, never data)."""

    uri: str
    digest: str
    cache_hit: bool
    metrics: dict[str, Any]
    seconds: float
    files_uri: str = ""  # where the artifact's files are (`uri/<payload>`): for links to e.g. report.html

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def mark_in_use(store: ArtifactStore, uris: Sequence[str]) -> None:
    for uri in uris:
        try:
            store.mark_in_use(uri)
        except Exception as e:  # a courtesy to the sweep (or a read-only store): a mark never fails a stage
            log.warning(f"[artifacts] could not mark {uri} in use: {e}")


class InUseMarks:
    """Keeps a building stage's inputs marked in use (now, then every `IN_USE_REFRESH_SECONDS`) until `stop()`.

    A training run can outlast the maintenance grace period; refreshing the marks keeps its inputs from
    being swept before its own artifact, which names them as parents, is published.
    """

    def __init__(self, store: ArtifactStore, uris: Sequence[str], every: float | None = None):
        self.store, self.uris, self.every = store, list(uris), every or IN_USE_REFRESH_SECONDS
        self._stop = threading.Event()
        mark_in_use(store, self.uris)
        self._thread = threading.Thread(target=self._loop, name="in-use-marks", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            mark_in_use(self.store, self.uris)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def artifact_uri(
    store: ArtifactStore,
    env_id: str,
    stage: str,
    code_version: str,
    params: dict[str, Any],
    parents: Sequence[Manifest],
    key_inputs: Sequence[str] | None = None,
) -> str:
    """Where `run_stage` will publish this stage's output for these inputs."""
    inputs = list(key_inputs) if key_inputs is not None else [p.digest for p in parents]
    return store.uri(env_id, stage, stage_key(stage, code_version, params, inputs))


def run_stage(
    store: ArtifactStore,
    *,
    env_id: str,
    stage: str,
    code_version: str,
    params: dict[str, Any],
    parents: Sequence[Manifest],
    build: Callable[[Path], dict[str, Any]],
    key_inputs: Sequence[str] | None = None,
) -> StageResult:
    """Runs `build(out_dir)` unless the artifact for these inputs already exists, then publishes it.

    `build` writes the artifact's files into `out_dir` and returns its metrics. The scratch directory
    is removed whatever happens, so a failed build leaves nothing behind in the store.

    `key_inputs`: digests of the part of the parents the stage reads, when that is less than the whole
    parent (render reads one shard of a demo set: adding demos must not change the key of the shards it
    already rendered). The parents are still recorded as lineage.
    """
    start = time.monotonic()
    parent_digests = [p.digest for p in parents]
    uri = artifact_uri(store, env_id, stage, code_version, params, parents, key_inputs)
    key = uri.rsplit("/", 1)[-1]
    existing = store.read_manifest(uri)
    if existing is not None:
        log.info(f"[{stage}] cache hit: {uri}")
        mark_in_use(store, [uri])
        return StageResult(
            uri, existing.digest, True, existing.metrics, time.monotonic() - start, store.files_uri(existing)
        )
    log.info(f"[{stage}] building {uri}")
    scratch = work_dir()
    in_use = None
    try:
        in_use = InUseMarks(store, [p.uri for p in parents])
        out = scratch / "out"
        out.mkdir()
        t0 = time.monotonic()
        metrics = build(out)
        t_build = time.monotonic() - t0
        manifest = Manifest(
            uri=uri,
            env_id=env_id,
            stage=stage,
            key=key,
            params=params,
            parents=tuple(p.uri for p in parents),
            parent_digests=tuple(parent_digests),
            files=list_files(out),
            metrics=metrics,
            timings={"build_s": round(t_build, 3)},
            versions=tool_versions(),
            created_at=time.time(),
        )
        t0 = time.monotonic()
        published = store.publish(out, manifest)
        reused = published.created_at != manifest.created_at or not published.payload
        if reused:
            log.info(f"[{stage}] another run published {uri} first; reusing it and discarding this run's copy")
        else:
            log.info(f"[{stage}] published {uri} ({len(manifest.files)} files) in {time.monotonic() - t0:.1f}s")
    finally:
        if in_use is not None:
            in_use.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return StageResult(
        uri, published.digest, reused, published.metrics, time.monotonic() - start, store.files_uri(published)
    )


STAGE_MODULES = {"select": "select_checkpoint"}  # the stages whose module is not named like the stage


class InputArtifactError(ArtifactError, ValueError):
    """A stage was given an input artifact it cannot take: another stage's, or another task's."""


def require(
    store: ArtifactStore, uri: str, *, stage: str | tuple[str, ...], env_id: str, what: str = "input"
) -> Manifest:
    """An input artifact's manifest, once checked: published in full, made by `stage`, for `env_id`.

    Every stage reads its inputs through this, so a missing, half-written or wrong input fails before any work with
    a message that names what was expected and where it comes from.
    """
    manifest = store.require(uri)
    stages = (stage,) if isinstance(stage, str) else stage
    if manifest.stage not in stages:
        expected = " or ".join(stages)
        raise InputArtifactError(
            f"{what} {uri} is a {manifest.stage} artifact; this takes a {expected} artifact: pass the URI that "
            f"`python -m tasks.{STAGE_MODULES.get(stages[0], stages[0])}` prints (or the {stages[0]} task's result)"
        )
    if manifest.env_id != env_id:
        raise InputArtifactError(
            f"{what} {uri} is an artifact of {manifest.env_id}, not of {env_id}: pass the "
            f"{manifest.stage} artifact made for {env_id}"
        )
    return manifest
