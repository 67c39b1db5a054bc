"""Training's resume points in the artifact store: uploaded off the training loop's critical path, pruned as they go.

openpi's train.py saves with orbax asynchronously and keeps only the newest checkpoint plus the `keep_period` ones.
Our loop also uploads each checkpoint to the store so that a retry on another worker resumes; done inline, that
upload (10 GB for a LoRA checkpoint, ~50 GB for a full fine-tune) would idle the GPU for minutes at every save, and
keeping every resume point until the artifact is published would hold ~0.3 TB (LoRA) to ~1.6 TB (full) per run.

Here a save hands the checkpoint to one background thread, which waits for orbax's write to finish, uploads the
tree (`COMPLETE.json` last, so a killed upload is never a resume point), then deletes the resume points it
supersedes, except the kept steps (their checkpoints become the artifact's candidates). At most one upload is in
flight: the next save first waits for the previous one, and a failed upload fails the run at that point (or at
`wait()`), never silently.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from tasks.core.store import ArtifactStore

log = logging.getLogger(__name__)


class UploadFailed(RuntimeError):
    """A resume point's upload failed: the run stops rather than training on without a way back."""


class ResumePoints:
    """The resume points of one training run under `uri` (`<uri>/<step>/`, each with a `COMPLETE.json` marker).

    `kept_steps`: steps never pruned (the `keep_period` checkpoints the artifact's candidates come from).
    `background`: upload in a thread (the default); False uploads inline (the old behaviour, for benchmarks).
    """

    def __init__(self, store: ArtifactStore, uri: str, kept_steps: Collection[int] = (), background: bool = True):
        self.store, self.uri, self.kept_steps = store, uri, frozenset(kept_steps)
        self.background = background
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="resume-point-upload")
        self._in_flight: tuple[int, concurrent.futures.Future] | None = None
        self.waited_s = 0.0  # time the loop spent waiting for an earlier upload (the part not off the critical path)
        self.uploaded: list[dict[str, Any]] = []  # per upload: step, seconds, MB

    def complete(self) -> dict[int, dict[str, Any]]:
        """The resume points whose upload finished: step -> marker."""
        return {int(name): marker for name, marker in self.store.complete_trees(self.uri).items() if name.isdigit()}

    def submit(self, step: int, finished: Callable[[], Path], marker: dict[str, Any]) -> None:
        """Uploads the checkpoint of `step` in the background: `finished()` runs first, in the upload thread, and
        returns the local checkpoint directory once it is completely written (it waits for orbax)."""
        self.wait()
        future = self._pool.submit(self._upload, step, finished, marker)
        self._in_flight = (step, future)
        if not self.background:
            self.wait()

    def wait(self) -> None:
        """Waits for the upload in flight, if any; raises `UploadFailed` if it failed."""
        if self._in_flight is None:
            return
        step, future = self._in_flight
        t0 = time.monotonic()
        try:
            future.result()
        except Exception as e:
            raise UploadFailed(
                f"the checkpoint of step {step} could not be uploaded to {self.uri}/{step}: {e}. A retry resumes "
                "from the newest complete resume point"
            ) from e
        finally:
            self._in_flight = None
            self.waited_s += time.monotonic() - t0

    def close(self) -> None:
        """Waits for the last upload (raising its failure) and stops the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ResumePoints:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Waits for the last upload: the final checkpoint must be complete before the artifact copies it, and its
        failure fails the run. When the loop itself failed, that error is the one reported."""
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):
            self.close()

    def _upload(self, step: int, finished: Callable[[], Path], marker: dict[str, Any]) -> None:
        directory = finished()
        t0 = time.monotonic()
        self.store.put_tree(directory, f"{self.uri}/{step}", marker)
        size = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
        self.uploaded.append({"step": step, "seconds": round(time.monotonic() - t0, 3), "mb": round(size / 2**20, 1)})
        pruned = self.prune(newest=step)
        log.info(
            f"[train] resume point {step} uploaded ({size / 2**20:.0f} MB in {time.monotonic() - t0:.1f} s)"
            + (f"; superseded ones deleted: {pruned}" if pruned else "")
        )

    def prune(self, newest: int) -> list[int]:
        """Deletes the resume points older than `newest` (complete or partial) except the kept steps."""
        stale = sorted(
            int(name)
            for name in self.store.children(self.uri)
            if name.isdigit() and int(name) < newest and int(name) not in self.kept_steps
        )
        for step in stale:
            self.store.delete_tree(f"{self.uri}/{step}")
        return stale
