"""Faults on real processes and a real S3 endpoint: SIGKILL mid-compute and mid-upload, the endpoint going
away for a short and a long while, and racing runs (docs/reliability.md, cases 1, 2 and 8).

The stage under test is `download` (ManiSkill's motion planner, two PickCube demos, ~8 s), run as its
own CLI process, so a kill is a real `kill -9` and the S3 traffic really crosses the network: the stage
talks to moto's S3 server through `tests/fixtures/faults.py's FlakyProxy`, which can be slowed down or taken away.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tasks.core.store import ArtifactError, ArtifactStore
from tasks.download import DownloadParams, download
from tests.fixtures.faults import FlakyProxy

pytestmark = pytest.mark.sim
PROJECT = Path(__file__).resolve().parents[3]
ENV_ID = "PickCube-v1"
ARGS = ["--env-id", ENV_ID, "--count", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def reference_digest(tmp_path_factory) -> str:
    """The digest an undisturbed run gives (local root: the digest does not depend on where it is stored)."""
    root = f"file://{tmp_path_factory.mktemp('reference')}"
    return download(DownloadParams(env_id=ENV_ID, count=2, seed=3), root=root).digest


@pytest.fixture
def proxy(s3_endpoint):
    host, port = s3_endpoint.removeprefix("http://").split(":")
    p = FlakyProxy((host, int(port))).up()
    yield p
    p.down()


class Stage:
    """One stage CLI process whose S3 endpoint is the proxy."""

    def __init__(self, tmp: Path, root: str, proxy: FlakyProxy, *, args=ARGS, retry_s: float = 60):
        self.log_path = tmp / f"stage-{time.monotonic_ns()}.log"
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": proxy.url, "PIPELINE_S3_RETRY_SECONDS": str(retry_s)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.download", "--root", root, *args],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "wb"),
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 300) -> dict | None:
        out, _ = self.proc.communicate(timeout=timeout)
        return json.loads(out.decode().strip().splitlines()[-1]) if self.proc.returncode == 0 else None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def s3_keys(root: str, sub: str = "") -> list[str]:
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{sub}")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def wait_for(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def uploading(root: str):
    """True once a payload object is on S3 and the manifest is not: an upload is in flight."""

    def check() -> bool:
        keys = s3_keys(root, f"{ENV_ID}/download/")
        return any("/payload-" in k for k in keys) and not any(k.endswith("/manifest.json") for k in keys)

    return check


def assert_one_clean_artifact(root: str, result: dict, reference_digest: str) -> None:
    assert result["digest"] == reference_digest  # same content as an undisturbed run
    key_dir = result["uri"].removeprefix("s3://").partition("/")[2]
    payload = result["files_uri"].rsplit("/", 1)[-1]
    keys = s3_keys(root, f"{ENV_ID}/download/")
    # in-use.json: a run that came second and cache-hit marks the artifact it reused (see tasks/core/store.py)
    stray = [
        k
        for k in keys
        if k not in (f"{key_dir}/manifest.json", f"{key_dir}/in-use.json") and not k.startswith(f"{key_dir}/{payload}/")
    ]
    assert payload.startswith("payload-") and f"{key_dir}/manifest.json" in keys and not stray, f"leftovers: {stray}"
    ArtifactStore(root).fetch(
        result["uri"], Path(os.environ["PIPELINE_WORK_DIR"]) / f"verify-{time.monotonic_ns()}"
    )  # hashes match


def test_sigkill_during_compute_leaves_nothing_and_the_rerun_is_identical(s3_root, proxy, tmp_path, reference_digest):
    stage = Stage(tmp_path, s3_root, proxy)
    wait_for(lambda: "[download] building" in stage.log, what="the build to start")
    time.sleep(2)  # inside ManiSkill's motion planner
    stage.kill()
    assert s3_keys(s3_root) == []  # compute happens in local scratch: nothing reached the store
    result = Stage(tmp_path, s3_root, proxy).wait()
    assert result is not None and not result["cache_hit"]
    assert_one_clean_artifact(s3_root, result, reference_digest)


def test_sigkill_during_upload_is_never_visible_and_the_rerun_is_identical(s3_root, proxy, tmp_path, reference_digest):
    proxy.latency = 0.5  # every chunk on the wire waits: the upload takes seconds
    stage = Stage(tmp_path, s3_root, proxy)
    wait_for(uploading(s3_root), what="the upload to start")
    stage.kill()
    keys = s3_keys(s3_root)
    assert keys and not any(k.endswith("manifest.json") for k in keys)  # files were on S3, the manifest was not
    uri = "s3://" + s3_root.removeprefix("s3://").partition("/")[0] + "/" + keys[0].split("/payload-")[0]
    store = ArtifactStore(s3_root)
    with pytest.raises(ArtifactError, match="missing or incomplete"):
        store.require(uri)  # a later stage cannot consume the partial upload
    from tasks.render import RenderParams, render

    with pytest.raises(ArtifactError, match="missing or incomplete"):
        render(RenderParams(env_id=ENV_ID), root=s3_root, demos=uri)

    proxy.latency = 0.0
    result = Stage(tmp_path, s3_root, proxy).wait()
    assert result is not None and result["uri"] == uri and not result["cache_hit"]
    assert_one_clean_artifact(s3_root, result, reference_digest)  # the killed run's payload is gone too


def test_endpoint_back_within_the_retry_window_the_stage_succeeds(s3_root, proxy, tmp_path, reference_digest):
    proxy.latency = 0.3
    stage = Stage(tmp_path, s3_root, proxy, retry_s=90)
    wait_for(uploading(s3_root), what="the upload to start")
    proxy.down()
    time.sleep(8)
    proxy.latency = 0.0
    proxy.up()
    result = stage.wait()
    assert result is not None, stage.log
    # it met the outage mid-upload: the publish lasted longer than the endpoint was away
    published = re.search(r"\[download\] published \S+ \(2 files\) in ([0-9.]+)s", stage.log)
    assert published and float(published.group(1)) >= 8, stage.log[-2000:]
    assert_one_clean_artifact(s3_root, result, reference_digest)


def test_endpoint_down_too_long_fails_clearly_and_the_rerun_after_recovery_succeeds(
    s3_root, proxy, tmp_path, reference_digest
):
    proxy.latency = 0.3
    stage = Stage(tmp_path, s3_root, proxy, retry_s=3)
    wait_for(uploading(s3_root), what="the upload to start")
    proxy.down()
    assert stage.wait(timeout=120) is None
    log = stage.log
    assert "StorageUnavailable" in log and f"storage endpoint {proxy.url} unreachable" in log and "rerun" in log, log[
        -2000:
    ]
    assert not any(k.endswith("manifest.json") for k in s3_keys(s3_root))
    proxy.latency = 0.0
    proxy.up()
    result = Stage(tmp_path, s3_root, proxy).wait()
    assert result is not None and not result["cache_hit"]
    assert_one_clean_artifact(s3_root, result, reference_digest)


def test_concurrent_runs_same_task_share_one_entry_and_other_tasks_stay_apart(
    s3_root, proxy, tmp_path, reference_digest
):
    same = [Stage(tmp_path, s3_root, proxy) for _ in range(2)]
    other = Stage(tmp_path, s3_root, proxy, args=["--env-id", "PushCube-v1", "--count", "2", "--seed", "3"])
    results = [s.wait() for s in same]
    pushed = other.wait()
    assert all(r is not None for r in results) and pushed is not None, [s.log[-1500:] for s in same]
    a, b = results
    assert a["uri"] == b["uri"] and a["digest"] == b["digest"] == reference_digest and a["files_uri"] == b["files_uri"]
    assert sorted([a["cache_hit"], b["cache_hit"]]) == [False, True]  # one built and published it, the other reuses it
    assert_one_clean_artifact(s3_root, a, reference_digest)
    assert pushed["uri"].startswith(f"{s3_root}/PushCube-v1/download/")
    ArtifactStore(s3_root).fetch(pushed["uri"], tmp_path / "pushed")
