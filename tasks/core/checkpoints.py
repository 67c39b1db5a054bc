"""How a train artifact holds its checkpoints, and how one of them is named and fetched.

A train artifact keeps its final checkpoint in `checkpoint/` and the kept ones (keep_period) in
`candidates/<step>/`; `<train uri>@<step>` names a kept one, the train URI alone the final one. train writes
this layout; verify, select, promote, serve and warm starts read it.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.params import TrainError
from tasks.core.store import ArtifactStore, Manifest, work_dir

CANDIDATES = "candidates"  # candidates/<step>/: the kept checkpoints of a train artifact (keep_period)


def final_step(manifest: Manifest) -> int:
    return int(manifest.metrics.get("steps") or manifest.params.get("steps") or 0)


def checkpoint_steps(manifest: Manifest) -> list[int]:
    """The steps whose checkpoints a train artifact holds: its candidates (keep_period) and the final one."""
    return [int(s) for s in manifest.metrics.get("checkpoint_steps") or [final_step(manifest)]]


def checkpoint_ref(uri: str, step: int | None) -> str:
    """How a kept checkpoint is named: `<train uri>@<step>`; the train URI alone is its final checkpoint."""
    return f"{uri}@{int(step)}" if step else uri


def split_checkpoint_ref(ref: str) -> tuple[str, int | None]:
    uri, sep, step = ref.rpartition("@")
    if not sep:
        return ref, None
    if not step.isdigit():
        raise TrainError(f"checkpoint {ref!r}: what follows '@' must be a step number (e.g. {uri}@5000)")
    return uri, int(step)


def checkpoint_files(folder: str) -> list[str]:
    """What loading one checkpoint needs from a train artifact: its params and assets (not the optimizer state) and
    the training log."""
    return [f"{folder}/params", f"{folder}/assets", "train_log.jsonl"]


def checkpoint_dir_name(manifest: Manifest, step: int | None) -> str:
    """The folder of a train artifact holding the checkpoint of `step` (None or 0: the final one)."""
    if not step or step == final_step(manifest):
        return "checkpoint"
    kept = checkpoint_steps(manifest)
    if step not in kept:
        raise TrainError(
            f"{manifest.uri} keeps no checkpoint of step {step}: it keeps steps {', '.join(map(str, kept))} "
            "(train with keep_period to keep more)"
        )
    return f"{CANDIDATES}/{step}"


def fetch_checkpoint(store: ArtifactStore, ref: str, cache_dir: Path | None = None) -> tuple[Manifest, Path]:
    """A checkpoint (`<train uri>` for the final one, `<train uri>@<step>` for a kept one) on local disk, as
    `create_trained_policy` takes it; only that checkpoint and the training log are fetched."""
    uri, step = split_checkpoint_ref(ref)
    manifest = store.require(uri)
    folder = checkpoint_dir_name(manifest, step)
    _, local = store.fetch(uri, cache_dir or work_dir(), only=checkpoint_files(folder))
    return manifest, local / folder
