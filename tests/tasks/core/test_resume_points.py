"""Resume points: uploaded while training goes on, one at a time, failures surfaced, superseded ones deleted."""

import threading
import time
from pathlib import Path

import pytest

from tasks.core.resume_points import ResumePoints, UploadFailed
from tasks.core.store import ArtifactStore


class GatedStore(ArtifactStore):
    """A real store (S3 on loopback) whose tree uploads wait for the test to open the gate: an upload in flight."""

    def __init__(self, root: str):
        super().__init__(root)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail = False

    def put_tree(self, local_dir, uri, marker):
        self.started.set()
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise ConnectionError("endpoint went away")
        super().put_tree(local_dir, uri, marker)


def checkpoint(tmp_path: Path, step: int) -> Path:
    d = tmp_path / "ckpt" / str(step)
    (d / "params").mkdir(parents=True)
    (d / "params" / "weights.bin").write_bytes(step.to_bytes(4, "little") * 1000)
    return d


def test_the_loop_goes_on_while_a_resume_point_uploads(s3_root, tmp_path):
    store = GatedStore(s3_root)
    points = ResumePoints(store, f"{s3_root}/progress", kept_steps=())
    t0 = time.monotonic()
    points.submit(10, lambda: checkpoint(tmp_path, 10), {"step": 10})
    assert store.started.wait(10)
    assert time.monotonic() - t0 < 5  # submit returned with the upload still in flight
    assert points.complete() == {}  # and nothing is a resume point before its upload ends
    store.gate.set()
    points.close()
    assert points.complete() == {10: {"step": 10}}
    assert points.uploaded[0]["step"] == 10 and points.uploaded[0]["mb"] >= 0


def test_at_most_one_upload_is_in_flight(s3_root, tmp_path):
    store = GatedStore(s3_root)
    points = ResumePoints(store, f"{s3_root}/progress")
    points.submit(1, lambda: checkpoint(tmp_path, 1), {"step": 1})
    second = threading.Thread(target=points.submit, args=(2, lambda: checkpoint(tmp_path, 2), {"step": 2}))
    second.start()
    second.join(1.0)
    assert second.is_alive()  # the next save waits for the previous upload
    store.gate.set()
    second.join(30)
    points.close()
    assert set(points.complete()) == {2}  # and 1, superseded, is gone
    assert points.waited_s > 0.5


def test_a_failed_upload_fails_the_run_at_the_next_save(s3_root, tmp_path):
    store = GatedStore(s3_root)
    store.fail = True
    store.gate.set()
    points = ResumePoints(store, f"{s3_root}/progress")
    points.submit(5, lambda: checkpoint(tmp_path, 5), {"step": 5})
    with pytest.raises(UploadFailed, match=r"checkpoint of step 5 could not be uploaded.*endpoint went away"):
        points.submit(6, lambda: checkpoint(tmp_path, 6), {"step": 6})
    points.close()
    assert points.complete() == {}


def test_a_checkpoint_that_fails_to_write_fails_the_run(s3_root, tmp_path):
    def orbax_failed() -> Path:
        raise OSError("disk full")

    points = ResumePoints(ArtifactStore(s3_root), f"{s3_root}/progress")
    points.submit(3, orbax_failed, {"step": 3})
    with pytest.raises(UploadFailed, match="disk full"):
        points.close()


def test_superseded_resume_points_are_deleted_except_the_kept_ones(s3_root, tmp_path):
    store = ArtifactStore(s3_root)
    uri = f"{s3_root}/progress"
    # A partial upload an earlier attempt left when it was killed: never a resume point, deleted once superseded.
    store.write_json(f"{uri}/50/params/weights.bin", {"partial": True})
    points = ResumePoints(store, uri, kept_steps=(200,))
    for step in (100, 200, 300, 400):
        points.submit(step, lambda step=step: checkpoint(tmp_path, step), {"step": step})
        points.wait()
        assert max(points.complete()) == step
    points.close()
    assert set(points.complete()) == {200, 400}
    assert sorted(store.children(uri)) == ["200", "400"]


def test_inline_uploads_return_only_when_complete(s3_root, tmp_path):
    points = ResumePoints(ArtifactStore(s3_root), f"{s3_root}/progress", background=False)
    points.submit(7, lambda: checkpoint(tmp_path, 7), {"step": 7})
    assert set(points.complete()) == {7}
    points.close()
