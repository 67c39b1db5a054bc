"""Garbage collection and retention on the local store and on the S3 endpoint, with real artifacts.

Two runs' worth of real artifacts (ManiSkill planner demos, rendered by the render stage) are made in
each store, with the run reports the pipeline writes (`runs/<run_id>/run.json`). A sweep keeping the
newest run must remove the older run's artifacts (children first), sweep old orphan payloads but never a
young one, leave every kept artifact whole with its lineage, and a later run must get cache hits for what
was kept and rebuild what was removed.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from tasks.core.store import IN_USE, MANIFEST, ArtifactStore
from tasks.download import DownloadParams, download
from tasks.maintenance import MaintenanceParams, maintain, payload_time
from tasks.render import RenderParams, render

pytestmark = pytest.mark.sim
ENV_ID = "PickCube-v1"


def _run(store: ArtifactStore, seed: int, run_id: str, finished_at: float) -> dict[str, str]:
    """One small 'run': demos and a one-episode render, recorded as the pipeline's run report records them."""
    demos = download(DownloadParams(env_id=ENV_ID, count=1, seed=seed), root=store.root)
    rendered = render(RenderParams(env_id=ENV_ID, shard_stop=1), root=store.root, demos=demos.uri)
    rows = [
        {"stage": "download", "seconds": demos.seconds, "cache_hit": demos.cache_hit, "uri": demos.uri},
        {"stage": "render[0]", "seconds": rendered.seconds, "cache_hit": rendered.cache_hit, "uri": rendered.uri},
    ]
    store.write_json(
        f"{store.root}/{ENV_ID}/runs/{run_id}/run.json",
        {"run_id": run_id, "env_id": ENV_ID, "stages": rows, "finished_at": finished_at},
    )
    return {"download": demos.uri, "render": rendered.uri}


def _manifests(store: ArtifactStore) -> set[str]:
    found = set()
    for stage in ("download", "render"):
        base = f"{store.root}/{ENV_ID}/{stage}"
        found |= {f"{base}/{key}" for key in store.children(base) if MANIFEST in store.children(f"{base}/{key}")}
    return found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_retention_keeps_the_newest_runs_lineage_and_sweeps_old_orphans(where, local_root, request):
    root = local_root if where == "local" else request.getfixturevalue("s3_root")
    store = ArtifactStore(root)
    old = _run(store, seed=0, run_id="run-old", finished_at=time.time() - 3 * 86400)
    new = _run(store, seed=5, run_id="run-new", finished_at=time.time())
    # What killed uploads leave behind: payload folders no manifest names, one from long ago, one being written now.
    stale = f"{new['render']}/payload-20200101T000000-deadbeef"
    live = f"{new['render']}/payload-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-0badcafe"
    for folder in (stale, live):
        store.write_bytes(f"{folder}/trajectory.h5", b"half an upload")
    assert payload_time("payload-20200101T000000-deadbeef") == pytest.approx(1577836800)
    before = _manifests(store)

    # 1. The CLI's default: a dry run reports and removes nothing. Every artifact is younger than the grace period.
    dry = maintain(MaintenanceParams(keep_runs=1), root=root).metrics
    assert dry["dry_run"] and dry["removed"] == [] and dry["orphan_payloads"] == [stale]
    assert dry["run_reports_removed"] == [f"{root}/{ENV_ID}/runs/run-old"]
    assert (
        dry["storage_before"][ENV_ID]["render"]["artifacts"] == 2
        and dry["storage_before"][ENV_ID]["render"]["bytes"] > 0
    )
    assert _manifests(store) == before and store.children(stale)

    # 2. Applied with the grace period: the old orphan goes, the payload still being written stays.
    swept = maintain(MaintenanceParams(keep_runs=1, dry_run=False), root=root).metrics
    assert swept["orphan_payloads"] == [stale] and swept["removed"] == []
    assert not store.children(stale) and store.children(live)

    # 3. No grace: the older run's artifacts go, children before parents; the newest run's lineage stays whole.
    result = maintain(MaintenanceParams(keep_runs=1, grace_hours=0, dry_run=False), root=root).metrics
    assert result["removed"] == [old["render"], old["download"]]
    assert result["bytes_freed"] > 0 and result["kept"] == 2
    assert result["storage_after"][ENV_ID]["render"]["artifacts"] == 1
    assert _manifests(store) == {new["download"], new["render"]}
    assert store.read_json(f"{root}/{ENV_ID}/runs/run-old/run.json") is None
    for uri in _manifests(store):
        manifest, _ = store.fetch(uri, request.getfixturevalue("tmp_path") / "fetch")  # sizes (and hashes on S3) verify
        assert all(store.read_manifest(p) is not None for p in manifest.parents)

    # 4. The next run: cache hits for what was kept, a rebuild for what was removed.
    assert download(DownloadParams(env_id=ENV_ID, count=1, seed=5), root=root).cache_hit
    assert render(RenderParams(env_id=ENV_ID, shard_stop=1), root=root, demos=new["download"]).cache_hit
    rebuilt = download(DownloadParams(env_id=ENV_ID, count=1, seed=0), root=root)
    assert not rebuilt.cache_hit and rebuilt.uri == old["download"]


def test_latest_keeps_its_checkpoint_lineage_however_old(local_root):
    """A promoted artifact outlives the run window: latest.json is a retention root, parents included."""
    store = ArtifactStore(local_root)
    first = _run(store, seed=0, run_id="run-1", finished_at=time.time() - 86400)
    _run(store, seed=5, run_id="run-2", finished_at=time.time())
    store.write_json(f"{local_root}/{ENV_ID}/latest.json", {"env_id": ENV_ID, "checkpoint": first["render"]})
    result = maintain(MaintenanceParams(keep_runs=1, grace_hours=0, dry_run=False), root=local_root).metrics
    assert result["removed"] == [] and len(_manifests(store)) == 4
    assert result["run_reports_removed"] == [f"{local_root}/{ENV_ID}/runs/run-1"]


def _age(store: ArtifactStore, uri: str, days: float) -> None:
    """What `days` of waiting would do to an artifact: created (and last used) that long ago."""
    manifest = store.read_manifest(uri)
    store.write_bytes(
        f"{uri}/{MANIFEST}",
        dataclasses.replace(manifest, created_at=manifest.created_at - days * 86400).to_json().encode(),
    )
    if store.in_use_at(uri) is not None:
        store.write_json(f"{uri}/{IN_USE}", {"used_at": store.in_use_at(uri) - days * 86400})


def test_a_run_in_progress_keeps_what_it_reuses_and_stale_resume_points_go(local_root, tmp_path):
    """The race the in-use marks close: a run that cache-hits an old artifact must not lose it to a sweep mid-run."""
    store = ArtifactStore(local_root)
    t0 = time.time()
    old = _run(store, seed=0, run_id="run-old", finished_at=t0 - 3 * 86400)
    _run(store, seed=5, run_id="run-new", finished_at=t0)
    assert store.in_use_at(old["download"]) >= t0  # rendering read it: marked in use
    for uri in old.values():
        _age(store, uri, days=3)
    # A run starting now reuses the old demos: the cache hit marks them in use.
    assert download(DownloadParams(env_id=ENV_ID, count=1, seed=0), root=local_root).cache_hit
    assert store.in_use_at(old["download"]) >= t0
    # Resume points: one of a training killed three weeks ago and never rerun, one of a training saving now.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "params").write_bytes(b"weights")
    progress = f"{local_root}/{ENV_ID}/train-progress"
    store.put_tree(ckpt, f"{progress}/abandoned/1000", {"step": 1000, "saved_at": t0 - 21 * 86400})
    store.put_tree(ckpt, f"{progress}/running/2000", {"step": 2000, "saved_at": t0})

    result = maintain(MaintenanceParams(keep_runs=1, dry_run=False), root=local_root).metrics
    assert result["removed"] == [old["render"]]  # outside the run window and unused; its demos are in use
    assert store.read_manifest(old["download"]) is not None
    assert result["resume_points_removed"] == [f"{progress}/abandoned"]
    assert not store.children(f"{progress}/abandoned") and list(store.complete_trees(f"{progress}/running")) == ["2000"]


def test_cli_is_a_dry_run_unless_told_to_apply(local_root):
    import json
    import subprocess
    import sys

    from tests.conftest import PROJECT

    store = ArtifactStore(local_root)
    orphan = f"{local_root}/{ENV_ID}/render/0123456789abcdef0123/payload-20200101T000000-deadbeef"
    store.write_bytes(f"{orphan}/x.h5", b"x")
    out = subprocess.run(
        [sys.executable, "-m", "tasks.maintenance", "--root", local_root],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["metrics"]["orphan_payloads"] == [orphan] and store.children(orphan)
    assert "would remove orphan payload" in out.stderr
    subprocess.run(
        [sys.executable, "-m", "tasks.maintenance", "--root", local_root, "--apply"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not store.children(orphan)
