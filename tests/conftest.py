"""Shared fixtures: a real S3 endpoint (moto's server over HTTP on 127.0.0.1) and a real demo pipeline run.

Nothing here is mocked: the S3 side is a real HTTP server speaking the S3 protocol, demos come from
ManiSkill's motion planner, rendering is software Vulkan, datasets are written and read by LeRobot.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from tasks.core.stage import stage_key, tool_versions
from tasks.core.store import ArtifactStore, Manifest, list_files

PROJECT = Path(__file__).resolve().parent.parent

# Airflow reads its configuration once, at first import: point it at a private home before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT / "plugins"))
# The tests run the demo profile (tiny preset, few demos); tests of the production profile ask for it by name.
os.environ["PIPELINE_PROFILE"] = "demo"
# LeRobot reads HF_LEROBOT_HOME once, when lerobot.constants is first imported (tasks.core.dataset imports it, so the
# test modules do at collection): a private one for the session, set before that.
os.environ["HF_LEROBOT_HOME"] = tempfile.mkdtemp(prefix="lerobot-home-")


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    icd = PROJECT / ".cache" / "mesa" / "lvp_icd.json"
    if icd.is_file():
        os.environ.setdefault("VK_ICD_FILENAMES", str(icd))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lerobot.constants import HF_LEROBOT_HOME

    assert Path(os.environ["HF_LEROBOT_HOME"]) == HF_LEROBOT_HOME, "lerobot.constants was imported before conftest"
    os.environ["PIPELINE_WORK_DIR"] = str(tmp_path_factory.mktemp("work"))
    os.environ.setdefault("WANDB_MODE", "offline")
    # openpi's tokenizer cache, private to the test session and seeded with the offline stand-in
    # (the real PaliGemma tokenizer cannot be fetched here); see tasks/policy/tokenizer.py.
    os.environ["OPENPI_DATA_HOME"] = str(tmp_path_factory.mktemp("openpi_data_home"))
    os.environ.setdefault("PIPELINE_JAX_CACHE", str(tmp_path_factory.mktemp("jax_cache")))
    from tasks.policy.tokenizer import seed_offline_tokenizer

    seed_offline_tokenizer()


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="test-key-id",
        AWS_SECRET_ACCESS_KEY="test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=f"http://{host}:{port}",
    )
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_root(s3_endpoint) -> str:
    bucket = f"pipeline-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts"


@pytest.fixture
def local_root(tmp_path) -> str:
    return f"file://{tmp_path / 'artifacts'}"


def publish_dir(
    store: ArtifactStore,
    env_id: str,
    stage: str,
    directory: Path,
    tag: str = "",
    params: dict | None = None,
    metrics: dict | None = None,
) -> str:
    """Publishes hand-made files as a complete artifact (to feed a stage deliberately bad input)."""
    key = stage_key(stage, "test", {"tag": tag or str(directory)}, [])
    uri = store.uri(env_id, stage, key)
    manifest = Manifest(
        uri=uri,
        env_id=env_id,
        stage=stage,
        key=key,
        params=params or {},
        parents=(),
        parent_digests=(),
        files=list_files(directory),
        metrics=metrics or {},
        timings={},
        versions=tool_versions(),
        created_at=0.0,
    )
    store.publish(directory, manifest)
    return uri


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> tuple[str, str]:
    """Four real PickCube-v1 demos from ManiSkill's motion planner, in a local artifact store."""
    from tasks.download import DownloadParams, download

    root = f"file://{tmp_path_factory.mktemp('demo_store')}"
    result = download(DownloadParams(env_id="PickCube-v1", count=4, seed=0), root=root)
    return root, result.uri


@pytest.fixture(scope="session")
def rendered_set(demo_set) -> tuple[str, str]:
    from tasks.render import RenderParams, render

    root, demos = demo_set
    return root, render(RenderParams(env_id="PickCube-v1"), root=root, demos=demos).uri
