"""The artifact store: one root URI, content-addressed stage outputs, manifests written last.

Layout: `<root>/<env_id>/<stage>/<key>/manifest.json` and `<root>/<env_id>/<stage>/<key>/<payload>/<files>`.
`<key>` hashes (stage, stage code version, params, parents' digests): the same inputs give the same
key, so a stage whose manifest exists is skipped. An artifact without a manifest is incomplete and is
never read.

Publishing is a compare-and-swap: each attempt uploads its files under its own `payload-<id>/` folder,
then creates the manifest only if none exists (S3 conditional PUT `If-None-Match: *`; a hard link on a
local disk). So two runs racing on one key cannot mix their files: one manifest wins, the loser deletes
its payload and reuses the winner's, and a killed upload leaves only an unreferenced payload folder,
which the next successful publish of that key removes (or the maintenance sweep, after a grace period).

A stage that reuses an artifact (cache hit) or reads one as an input writes `<key>/in-use.json` with the
time, refreshed while it builds; the maintenance sweep treats a recently used artifact as young and keeps
it, so a run that reuses old artifacts does not lose them to a sweep mid-run.

Storage goes through fsspec (s3fs for `s3://`, the local filesystem for `file://`); credentials and
endpoints come from the environment (AWS_* variables, set by the Airflow connection binding in
plugins/), never from params. Calls that fail because the endpoint cannot be reached are retried with
backoff for `PIPELINE_S3_RETRY_SECONDS` (default 300 s); after that the stage fails with
`StorageUnavailable`, which names the endpoint, and a rerun continues from what was published.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fsspec
import fsspec.asyn
import tenacity

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
COMPLETE = "COMPLETE.json"
IN_USE = "in-use.json"  # `<key>/in-use.json`: when a stage last read or reused the artifact (retention keeps it)
IN_USE_REFRESH_SECONDS = 1800.0  # a stage still building refreshes its inputs' marks this often
PAYLOAD_PREFIX = "payload-"
PAYLOAD_TIME_FORMAT = "%Y%m%dT%H%M%S"  # UTC; `payload-<time>-<id>`: the sweep of orphan payloads reads it back
DEFAULT_RETRY_SECONDS = 300.0
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, corrupt or addressed by a bad URI."""


class StorageUnavailable(RuntimeError):
    """The storage endpoint could not be reached within the retry window (retryable: rerun once it is back)."""


_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


def is_transient(exc: BaseException, _depth: int = 0) -> bool:
    """True for errors that mean "the endpoint is not answering right now", not "the request is wrong"."""
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import botocore.exceptions as bce

        if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError)):
            return True
    except ImportError:
        pass
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientError):
            return True
    except ImportError:
        pass
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    cause = exc.__cause__ or exc.__context__  # libraries often wrap the connection error
    return cause is not None and cause is not exc and _depth < 8 and is_transient(cause, _depth + 1)


def retry_seconds() -> float:
    value = os.environ.get("PIPELINE_S3_RETRY_SECONDS", "")
    try:
        return float(value) if value else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise ArtifactError(f"PIPELINE_S3_RETRY_SECONDS={value!r} is not a number of seconds") from None


def check_segment(value: str, what: str) -> str:
    """Refuses anything that would escape its place in the layout (`..`, `/`, spaces, empty)."""
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise ArtifactError(
            f"bad {what} {value!r}: only letters, digits, '.', '_' and '-' are allowed "
            "(no '/', '..', spaces or leading dots), at most 128 characters"
        )
    return value


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    uri: str
    env_id: str
    stage: str
    key: str
    params: dict[str, Any]
    parents: tuple[str, ...]
    parent_digests: tuple[str, ...]
    files: tuple[FileEntry, ...]
    metrics: dict[str, Any]
    timings: dict[str, float]
    versions: dict[str, str]
    created_at: float
    payload: str = ""  # folder under the key holding the files ("" = the key itself); not part of the digest

    @property
    def digest(self) -> str:
        """Digest of the content (file names, sizes, hashes): equal outputs give equal digests."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
        return h.hexdigest()

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["digest"] = self.digest
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data.pop("digest", None)
        data["files"] = tuple(FileEntry(**f) for f in data["files"])
        data["parents"] = tuple(data["parents"])
        data["parent_digests"] = tuple(data["parent_digests"])
        return cls(**data)


class ArtifactStore:
    """Reads and publishes artifacts under one root URI (`file:///abs/dir` or `s3://bucket/prefix`)."""

    def __init__(self, root: str):
        self.root = self.validate_root(root)
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self.protocol = "file" if self.root.startswith("file://") else "s3"
        self.retry_window = retry_seconds()

    @staticmethod
    def validate_root(root: str) -> str:
        if not isinstance(root, str):
            raise ArtifactError(f"bad artifact root {root!r}: expected a string URI")
        root = root.rstrip("/")
        if root.startswith("file://"):
            path = root[len("file://") :]
            if not path.startswith("/"):
                raise ArtifactError(
                    f"bad artifact root {root!r}: file:// roots need an absolute path, e.g. file:///data/artifacts"
                )
            return root
        if root.startswith("s3://"):
            bucket, _, prefix = root[len("s3://") :].partition("/")
            if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
                raise ArtifactError(f"bad artifact root {root!r}: {bucket!r} is not a valid S3 bucket name")
            for part in filter(None, prefix.split("/")):
                check_segment(part, "artifact root prefix segment")
            return root
        raise ArtifactError(
            f"bad artifact root {root!r}: use file:///absolute/dir (embedded default) or s3://bucket/prefix"
        )

    # ---- the endpoint may be away for a while ----------------------------------------------------------------------
    def _endpoint(self) -> str:
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def _retrying(self, what: str, op: Callable[[], Any]) -> Any:
        """Runs one storage call, retrying with backoff (0.5 s doubling to 15 s) while the endpoint cannot be reached;
        any other error is raised at once."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            e = state.outcome.exception()
            log.warning(
                f"[storage] {self._endpoint()} not answering ({type(e).__name__}); retrying '{what}' in "
                f"{state.upcoming_sleep:.1f}s"
            )
            if hasattr(self.fs, "invalidate_cache"):  # s3fs caches listings: a retry must not read a stale one
                self.fs.invalidate_cache()

        backoff = tenacity.wait_exponential(multiplier=0.5, min=0.5, max=15.0)

        def wait(state: tenacity.RetryCallState) -> float:
            # the last wait ends at the window, then one last try: a window of N s gives up after N s, not N + 15
            return min(backoff(state), max(0.0, self.retry_window - state.seconds_since_start))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=tenacity.stop_after_delay(self.retry_window),
            wait=wait,
            before_sleep=before_sleep,
        )
        try:
            return retrying(op)
        except tenacity.RetryError as gave_up:
            e = gave_up.last_attempt.exception()
            raise StorageUnavailable(
                f"storage endpoint {self._endpoint()} unreachable for {self.retry_window:.0f}s while trying to {what} "
                f"({type(e).__name__}: {e}). Check that the endpoint is up and the S3 connection/credentials point at it, "
                "then rerun: completed artifacts are kept and incomplete ones are ignored. "
                "PIPELINE_S3_RETRY_SECONDS sets how long to wait."
            ) from e

    # ---- addressing -------------------------------------------------------------------------------------------------
    def uri(self, env_id: str, stage: str, key: str) -> str:
        return "/".join(
            (self.root, check_segment(env_id, "env id"), check_segment(stage, "stage"), check_segment(key, "key"))
        )

    def _path(self, uri: str) -> str:
        if not uri.startswith(self.root + "/") and uri != self.root:
            raise ArtifactError(f"{uri!r} is not under the artifact root {self.root!r}")
        rel = uri[len(self.root) :].lstrip("/")
        for part in filter(None, rel.split("/")):
            check_segment(part, "artifact path segment")
        return f"{self._root_path.rstrip('/')}/{rel}" if rel else self._root_path

    @staticmethod
    def files_uri(manifest: Manifest) -> str:
        """The URI of the folder holding the artifact's files (`<uri>/<payload>`)."""
        return f"{manifest.uri}/{manifest.payload}" if manifest.payload else manifest.uri

    def local_path(self, uri: str) -> Path | None:
        """The artifact's files on this machine when the root is local (no copy needed), else None."""
        if self.protocol != "file":
            return None
        manifest = self.require(uri)
        return Path(self._path(self.files_uri(manifest)))

    # ---- reading ----------------------------------------------------------------------------------------------------
    def _read_bytes(self, path: str, what: str) -> bytes | None:
        def op():
            try:
                with self.fs.open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        return self._retrying(what, op)

    def read_manifest(self, uri: str) -> Manifest | None:
        data = self._read_bytes(f"{self._path(uri)}/{MANIFEST}", f"read the manifest of {uri}")
        return None if data is None else Manifest.from_json(data.decode())

    def require(self, uri: str) -> Manifest:
        manifest = self.read_manifest(uri)
        if manifest is None:
            raise ArtifactError(
                f"artifact {uri} is missing or incomplete (no {MANIFEST}); rerun the stage that produces it"
            )
        return manifest

    def read_json(self, uri: str) -> Any | None:
        data = self._read_bytes(self._path(uri), f"read {uri}")
        return None if data is None else json.loads(data.decode())

    def write_json(self, uri: str, data: Any) -> None:
        self._write_bytes(self._path(uri), json.dumps(data, indent=2, sort_keys=True).encode())

    def read_json_versioned(self, uri: str) -> tuple[Any | None, str | None]:
        """A small mutable JSON object (e.g. `latest.json`) and its version, for `replace_json`."""
        path = self._path(uri)
        if self.protocol == "file":
            try:
                st = os.stat(path)
                data = Path(path).read_bytes()
            except FileNotFoundError:
                return None, None
            return json.loads(data.decode()), f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
        bucket, _, key = path.partition("/")

        async def get():  # body and ETag from one GET, so the version is the one of the bytes read
            out = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with out["Body"] as stream:
                return await stream.read(), out["ETag"]

        def op():
            try:
                data, etag = fsspec.asyn.sync(self.fs.loop, get)
            except FileNotFoundError:
                return None, None
            return json.loads(data.decode()), etag

        return self._retrying(f"read {uri}", op)

    def replace_json(self, uri: str, data: Any, version: str | None) -> bool:
        """Compare-and-swap: writes `data` only if the object is still at `version` (None: still absent).

        False when another writer got there first; re-read and decide again. S3: a conditional PUT
        (`If-Match` on the ETag, or `If-None-Match: *`); local disk: an exclusive lock around check and rename.
        """
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        path = self._path(uri)
        if self.protocol == "file":
            import fcntl

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(f"{path}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _, current = self.read_json_versioned(uri)
                if current != version:
                    return False
                self._write_bytes(path, body)
                return True
        bucket, _, key = path.partition("/")
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}

        def op():
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)
                return True
            except FileExistsError:
                return False
            except OSError as e:  # s3fs raises If-Match failures (412 PreconditionFailed) as EINVAL
                if e.errno == errno.EINVAL:
                    return False
                raise
            finally:
                self.fs.invalidate_cache(path)

        return self._retrying(f"write {uri}", op)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """One whole object at `uri` (atomic: readers see the old or the new one, never a part)."""
        self._write_bytes(self._path(uri), data)

    def fetch(self, uri: str, cache_dir: Path, only: Sequence[str] = ()) -> tuple[Manifest, Path]:
        """Makes a complete artifact readable on local disk; verifies sizes (and hashes when copied).

        `only`: fetch just the files under these folders or with these names (e.g. one kept checkpoint of a
        train artifact, not all of them); the returned folder then holds only those.
        """
        manifest = self.require(uri)
        files = self._path(self.files_uri(manifest))
        wanted = [
            f
            for f in manifest.files
            if not only or any(f.path == o or f.path.startswith(o.rstrip("/") + "/") for o in only)
        ]
        if only and not wanted:
            raise ArtifactError(f"artifact {uri} has no files under {', '.join(only)}")
        if self.protocol == "file":
            local = Path(files)
            for f in wanted:
                p = local / f.path
                if not p.is_file() or p.stat().st_size != f.size:
                    raise ArtifactError(
                        f"artifact {uri}: file {f.path} is missing or has the wrong size; delete {uri} and rerun"
                    )
            return manifest, local
        dest = Path(cache_dir) / manifest.key
        # A whole fetch is marked by the manifest; a partial one by a marker naming what it fetched.
        done = dest / (
            MANIFEST if not only else ".fetched-" + hashlib.sha256("\n".join(sorted(only)).encode()).hexdigest()[:16]
        )
        if done.is_file() and Manifest.from_json(done.read_text()).digest == manifest.digest:
            return manifest, dest
        if (dest / MANIFEST).is_file() and Manifest.from_json((dest / MANIFEST).read_text()).digest == manifest.digest:
            return manifest, dest  # the whole artifact is already here
        if dest.exists() and not only:
            shutil.rmtree(dest)
        for f in wanted:
            target = dest / f.path
            if only and target.is_file() and target.stat().st_size == f.size and sha256_file(target) == f.sha256:
                continue  # fetched for another part before
            target.parent.mkdir(parents=True, exist_ok=True)
            self._retrying(
                f"download {uri}/{f.path}",
                lambda f=f, target=target: self.fs.get_file(f"{files}/{f.path}", str(target)),
            )
            if sha256_file(target) != f.sha256:
                raise ArtifactError(
                    f"artifact {uri}: {f.path} does not match its manifest hash; delete {uri} and rerun"
                )
        done.write_text(manifest.to_json())
        return manifest, dest

    # ---- writing ----------------------------------------------------------------------------------------------------
    def _write_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Writes a whole object atomically. With `exclusive`, only if none exists: returns False when one did."""
        if self.protocol == "file":
            # write-then-rename (or link, which refuses to replace): a reader never sees a partial file
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if not exclusive:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)

        # a single S3 PUT is atomic: the object appears whole or not at all; `If-None-Match: *` makes it a create
        def op():
            try:
                self.fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
                return True
            except FileExistsError:
                return False

        return self._retrying(f"write {path}", op)

    def _put_file(self, src: Path, dst: str) -> None:
        if self.protocol == "file":
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{dst}.tmp-{os.getpid()}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        else:
            self._retrying(f"upload {dst}", lambda: self.fs.put_file(str(src), dst))

    def children(self, uri: str) -> list[str]:
        """Names directly under `uri` (folders and files; [] when there is nothing)."""
        return self._children(self._path(uri))

    def mark_in_use(self, uri: str) -> None:
        """Records that a stage is reading (or reusing) the artifact now: retention keeps it for its grace period.

        Without this, a run that reuses an old artifact (a cache hit on last month's demos) could see it swept
        by the maintenance DAG between the cache hit and the stage that reads it.
        """
        self.write_bytes(f"{uri}/{IN_USE}", json.dumps({"used_at": time.time(), "host": platform.node()}).encode())

    def in_use_at(self, uri: str) -> float | None:
        data = self.read_json(f"{uri}/{IN_USE}")
        return float(data["used_at"]) if isinstance(data, dict) and "used_at" in data else None

    def remove(self, uri: str) -> None:
        """Deletes `uri` and everything under it (no error when it is gone already)."""
        self._remove(self._path(uri))

    def _children(self, path: str) -> list[str]:
        def op():
            try:
                return [c.rstrip("/").rsplit("/", 1)[-1] for c in self.fs.ls(path, detail=False, refresh=True)]
            except (FileNotFoundError, NotADirectoryError):
                return []

        return self._retrying(f"list {path}", op)

    def _remove(self, path: str) -> None:
        def op():
            try:
                self.fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass

        self._retrying(f"delete {path}", op)

    def publish(self, local_dir: Path, manifest: Manifest) -> Manifest:
        """Uploads the files under a fresh payload folder, then creates the manifest unless another run did.

        Returns the manifest that is published: ours, or the one of the run that got there first (whose
        files are then the ones readers see; ours are deleted).
        """
        target = self._path(manifest.uri)
        existing = self.read_manifest(manifest.uri)
        if existing is not None:
            return existing
        payload = f"{PAYLOAD_PREFIX}{time.strftime(PAYLOAD_TIME_FORMAT, time.gmtime())}-{uuid.uuid4().hex[:8]}"
        try:
            for f in manifest.files:
                self._put_file(Path(local_dir) / f.path, f"{target}/{payload}/{f.path}")
        except FileNotFoundError:
            # A racing run published first and removed our half-uploaded payload as an orphan: reuse its artifact.
            existing = self.read_manifest(manifest.uri)
            if existing is None:
                raise
            self._remove(f"{target}/{payload}")
            return existing
        ours = dataclasses.replace(manifest, payload=payload)
        if not self._write_bytes(f"{target}/{MANIFEST}", ours.to_json().encode(), exclusive=True):
            self._remove(f"{target}/{payload}")
            return self.require(manifest.uri)
        # Payload folders no manifest points at are from killed attempts or from racing runs that lost (those
        # delete their own too): nothing will ever read them.
        for name in self._children(target):
            if name.startswith(PAYLOAD_PREFIX) and name != payload:
                try:
                    self._remove(f"{target}/{name}")
                except OSError as e:
                    # A racing run is still writing into it (a local rm -r then meets new files): it deletes its own
                    # payload once it sees our manifest, and the maintenance sweep takes anything left. Our publish
                    # is complete either way.
                    log.warning(f"[artifacts] left {target}/{name} to its writer: {e}")
        return ours

    # ---- progress trees (e.g. training checkpoints kept for resume; not artifacts, never read as one) --------------
    def put_tree(self, local_dir: Path, uri: str, marker: dict[str, Any]) -> None:
        """Uploads a directory, then `COMPLETE.json`: a tree without its marker is a partial upload and is ignored."""
        target = self._path(uri)
        for p in sorted(Path(local_dir).rglob("*")):
            if p.is_file():
                self._put_file(p, f"{target}/{p.relative_to(local_dir).as_posix()}")
        self._write_bytes(f"{target}/{COMPLETE}", json.dumps(marker, sort_keys=True).encode())

    def complete_trees(self, uri: str) -> dict[str, dict[str, Any]]:
        """Children of `uri` whose upload finished (name -> marker)."""
        base = self._path(uri)
        found = {}
        for name in self._children(base):
            try:
                data = self._read_bytes(f"{base}/{name}/{COMPLETE}", f"read {uri}/{name}/{COMPLETE}")
            except NotADirectoryError:
                continue
            if data is not None:
                found[name] = json.loads(data.decode())
        return found

    def get_tree(self, uri: str, local_dir: Path, skip: Sequence[str] = ()) -> Path:
        """Downloads an uploaded tree (`skip`: top-level folders to leave out)."""
        base = self._path(uri)
        local_dir = Path(local_dir)
        if local_dir.exists():
            shutil.rmtree(local_dir)
        local_dir.mkdir(parents=True)
        for path in self._retrying(f"list {uri}", lambda: self.fs.find(base)):
            rel = path[len(base.rstrip("/")) :].lstrip("/")  # fsspec returns paths in the form `base` has
            if rel == COMPLETE or rel.split("/", 1)[0] in skip:
                continue
            dst = local_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            self._retrying(f"download {uri}/{rel}", lambda path=path, dst=dst: self.fs.get_file(path, str(dst)))
        return local_dir

    def delete_tree(self, uri: str) -> None:
        self._remove(self._path(uri))


def list_files(directory: Path) -> tuple[FileEntry, ...]:
    entries = []
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file():
            rel = p.relative_to(directory).as_posix()
            entries.append(FileEntry(rel, p.stat().st_size, sha256_file(p)))
    return tuple(entries)


def latest_uri(store: ArtifactStore, env_id: str) -> str:
    """The promoted checkpoint's pointer for one task (written by the promote stage)."""
    return f"{store.root}/{check_segment(env_id, 'env id')}/latest.json"


def work_dir() -> Path:
    base = Path(os.environ.get("PIPELINE_WORK_DIR", tempfile.gettempdir()))
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="stage-", dir=base))
