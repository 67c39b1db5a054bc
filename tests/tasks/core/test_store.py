import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from tasks.core.stage import run_stage, stage_key
from tasks.core.store import ArtifactError, ArtifactStore


def _build(files: dict[str, bytes]):
    def build(out: Path) -> dict:
        for name, data in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        return {"n": len(files)}

    return build


def test_key_depends_on_every_input():
    base = stage_key("render", "1", {"a": 1}, ["d1"])
    assert base == stage_key("render", "1", {"a": 1}, ["d1"])
    assert (
        len(
            {
                base,
                stage_key("render", "2", {"a": 1}, ["d1"]),
                stage_key("render", "1", {"a": 2}, ["d1"]),
                stage_key("render", "1", {"a": 1}, ["d2"]),
                stage_key("convert", "1", {"a": 1}, ["d1"]),
            }
        )
        == 5
    )


@pytest.mark.parametrize(
    "root", ["/tmp/x", "file://relative/dir", "s3://Bad_Bucket/x", "gs://b/x", "s3://bucket/../x", "s3://bucket/a b"]
)
def test_bad_roots_are_refused(root):
    with pytest.raises(ArtifactError, match="bad artifact root"):
        ArtifactStore(root)


@pytest.mark.parametrize("segment", ["../up", "a/b", "with space", "/abs", "", ".hidden"])
def test_keys_cannot_escape_the_layout(local_root, segment):
    with pytest.raises(ArtifactError):
        ArtifactStore(local_root).uri(segment, "render", "k")


def test_stage_publishes_manifest_and_second_run_is_a_cache_hit(local_root):
    store = ArtifactStore(local_root)
    calls = []

    def build(out: Path) -> dict:
        calls.append(1)
        return _build({"a.txt": b"hello", "sub/b.bin": b"\x00" * 10})(out)

    first = run_stage(
        store, env_id="PickCube-v1", stage="demo", code_version="1", params={"x": 1}, parents=[], build=build
    )
    second = run_stage(
        store, env_id="PickCube-v1", stage="demo", code_version="1", params={"x": 1}, parents=[], build=build
    )
    assert not first.cache_hit and second.cache_hit and first.uri == second.uri and first.digest == second.digest
    assert len(calls) == 1
    manifest = store.require(first.uri)
    assert {f.path for f in manifest.files} == {"a.txt", "sub/b.bin"}
    assert manifest.metrics == {"n": 2} and "python" in manifest.versions


def test_stages_mark_what_they_reuse_and_read_in_use(local_root, monkeypatch, caplog):
    """The marks the maintenance sweep keeps recent inputs by: on a cache hit, and refreshed through a long build."""
    import tasks.core.stage as stage_runner

    store = ArtifactStore(local_root)
    parent = run_stage(
        store,
        env_id="PickCube-v1",
        stage="demo",
        code_version="1",
        params={},
        parents=[],
        build=_build({"a.txt": b"a"}),
    )
    assert store.in_use_at(parent.uri) is None  # just built: its creation time says it is young
    hit = run_stage(
        store,
        env_id="PickCube-v1",
        stage="demo",
        code_version="1",
        params={},
        parents=[],
        build=_build({"a.txt": b"a"}),
    )
    first_mark = store.in_use_at(parent.uri)
    assert hit.cache_hit and first_mark is not None
    monkeypatch.setattr(stage_runner, "IN_USE_REFRESH_SECONDS", 0.05)
    marks = []

    def slow_build(out: Path) -> dict:
        for _ in range(4):
            time.sleep(0.1)
            marks.append(store.in_use_at(parent.uri))
        return _build({"b.txt": b"b"})(out)

    run_stage(
        store,
        env_id="PickCube-v1",
        stage="child",
        code_version="1",
        params={},
        parents=[store.require(parent.uri)],
        build=slow_build,
    )
    assert marks == sorted(marks) and marks[0] > first_mark and marks[-1] > marks[0]  # refreshed while building

    # A store this run may read but not write (a shared, read-only bucket): the mark is skipped, the hit stands.
    monkeypatch.setattr(
        ArtifactStore, "mark_in_use", lambda self, uri: (_ for _ in ()).throw(PermissionError("read-only"))
    )
    with caplog.at_level("WARNING", logger="tasks.core.stage"):
        again = run_stage(
            store,
            env_id="PickCube-v1",
            stage="demo",
            code_version="1",
            params={},
            parents=[],
            build=_build({"a.txt": b"a"}),
        )
    assert again.cache_hit and "could not mark" in caplog.text


def test_failed_build_leaves_no_artifact(local_root):
    store = ArtifactStore(local_root)

    def build(out: Path) -> dict:
        (out / "half.bin").write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stage(store, env_id="PickCube-v1", stage="demo", code_version="1", params={}, parents=[], build=build)
    assert not list(Path(local_root[len("file://") :]).rglob("manifest.json"))


def test_s3_publish_writes_manifest_last_and_fetch_verifies(s3_root, tmp_path):
    store = ArtifactStore(s3_root)
    result = run_stage(
        store,
        env_id="PickCube-v1",
        stage="demo",
        code_version="1",
        params={},
        parents=[],
        build=_build({"data.bin": b"x" * 1000}),
    )
    bucket, _, prefix = s3_root[len("s3://") :].partition("/")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    rel = result.files_uri[len(f"s3://{bucket}/") :]
    top = result.uri[len(f"s3://{bucket}/") :]
    assert sorted(keys) == sorted([f"{rel}/data.bin", f"{top}/manifest.json"])
    manifest, local = store.fetch(result.uri, tmp_path / "cache")
    assert (local / "data.bin").read_bytes() == b"x" * 1000
    # a corrupted object is detected on fetch
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{rel}/data.bin", Body=b"y" * 1000)
    with pytest.raises(ArtifactError, match="does not match its manifest hash"):
        store.fetch(result.uri, tmp_path / "cache2")
    assert (
        json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=f"{top}/manifest.json")["Body"].read())["digest"]
        == result.digest
    )


@pytest.mark.parametrize("root_fixture", ["local_root", "s3_root"])
def test_racing_publishes_of_one_key_leave_one_intact_artifact(request, root_fixture, tmp_path):
    """Four runs of one stage with the same inputs but different bytes (like two trainings) publish at once."""
    root = request.getfixturevalue(root_fixture)
    runs = 4
    barrier = threading.Barrier(runs)

    def build_for(i: int):
        def build(out: Path) -> dict:
            (out / "weights.bin").write_bytes(bytes([i]) * 200_000)
            (out / "log.txt").write_text(f"run {i}")
            barrier.wait()  # everyone publishes at the same moment
            return {"run": i}

        return build

    def one(i: int):
        return run_stage(
            ArtifactStore(root),
            env_id="PickCube-v1",
            stage="train",
            code_version="1",
            params={},
            parents=[],
            build=build_for(i),
        )

    with ThreadPoolExecutor(runs) as pool:
        results = list(pool.map(one, range(runs)))
    assert len({(r.uri, r.digest, r.files_uri) for r in results}) == 1
    assert sum(not r.cache_hit for r in results) == 1  # one wins; the others reuse its artifact
    store = ArtifactStore(root)
    manifest, local = store.fetch(results[0].uri, tmp_path / "cache")  # verifies every hash on S3
    winner = manifest.metrics["run"]
    assert (local / "weights.bin").read_bytes() == bytes([winner]) * 200_000 and (
        local / "log.txt"
    ).read_text() == f"run {winner}"
    assert set(store._children(store._path(manifest.uri))) == {"manifest.json", manifest.payload}  # losers cleaned up


def test_exclusive_manifest_write_refuses_to_replace(local_root, s3_root):
    for root in (local_root, s3_root):
        store = ArtifactStore(root)
        path = store._path(f"{root}/PickCube-v1/x/manifest.json")
        assert store._write_bytes(path, b"first", exclusive=True)
        assert not store._write_bytes(path, b"second", exclusive=True)
        assert store._read_bytes(path, "read") == b"first"


def test_latest_pointer_is_replaced_only_from_the_version_read(local_root, s3_root):
    """`latest.json` is a compare-and-swap: a writer holding a stale version is refused, not silently last."""
    for root in (local_root, s3_root):
        store = ArtifactStore(root)
        uri = f"{root}/PickCube-v1/latest.json"
        assert store.read_json_versioned(uri) == (None, None)
        assert store.replace_json(uri, {"checkpoint": "a"}, None)
        assert not store.replace_json(uri, {"checkpoint": "racer"}, None)  # it exists now
        data, v1 = store.read_json_versioned(uri)
        assert data == {"checkpoint": "a"} and v1
        assert store.replace_json(uri, {"checkpoint": "b"}, v1)
        assert not store.replace_json(uri, {"checkpoint": "stale"}, v1)  # read before "b" was written
        assert store.read_json_versioned(uri)[0] == {"checkpoint": "b"}


def test_only_unreachable_endpoint_errors_are_retried():
    import botocore.exceptions

    from tasks.core.store import is_transient

    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    wrapped = OSError("upload failed")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_transient(wrapped)  # a library's wrapper around a refused connection
    assert not is_transient(FileNotFoundError("no such key")) and not is_transient(PermissionError("denied"))
    assert not is_transient(ValueError("bad request"))
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a  # a cycle in the chain ends the walk
    assert not is_transient(a)
