"""download -> render (2 shards) -> convert -> stats on a real S3 endpoint, with real ManiSkill, LeRobot and openpi."""

import json
import os
import shutil
from pathlib import Path

import boto3
import numpy as np
import pytest

from tasks.convert import ConvertParams, convert
from tasks.core.dataset import ACTION_KEY
from tasks.core.specs import get_spec
from tasks.core.store import ArtifactStore, sha256_file
from tasks.download import DownloadParams, download
from tasks.render import RenderParams, render
from tasks.stats import StatsParams, stats

pytestmark = pytest.mark.sim
ENV_ID = "PickCube-v1"
HORIZON = 10


@pytest.fixture(scope="module")
def s3_pipeline(s3_endpoint, tmp_path_factory):
    bucket = "pipeline-e2e"
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/runs"
    demos = download(DownloadParams(env_id=ENV_ID, count=3, seed=10), root=root)
    shards = [
        render(RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=2), root=root, demos=demos.uri),
        render(RenderParams(env_id=ENV_ID, shard_start=2, shard_stop=-1), root=root, demos=demos.uri),
    ]
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[s.uri for s in shards])
    norm = stats(StatsParams(env_id=ENV_ID, action_horizon=HORIZON), root=root, dataset=dataset.uri)
    return {"root": root, "bucket": bucket, "demos": demos, "shards": shards, "dataset": dataset, "stats": norm}


def test_every_artifact_is_on_s3_with_a_manifest_matching_its_files(s3_pipeline, tmp_path):
    s3 = boto3.client("s3")
    bucket = s3_pipeline["bucket"]
    results = [s3_pipeline["demos"], *s3_pipeline["shards"], s3_pipeline["dataset"], s3_pipeline["stats"]]
    for result in results:
        prefix = result.uri[len(f"s3://{bucket}/") :]
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
        assert manifest["digest"] == result.digest and manifest["uri"] == result.uri
        listed = {
            o["Key"][len(prefix) + 1 :] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
        }
        payload = manifest["payload"]
        assert payload.startswith("payload-") and result.files_uri == f"{result.uri}/{payload}"
        # in-use.json: the mark a stage leaves on an input it read (the maintenance sweep keeps recent ones)
        assert listed - {"in-use.json"} == {f"{payload}/{f['path']}" for f in manifest["files"]} | {"manifest.json"}
        if result is not s3_pipeline["stats"]:
            assert "in-use.json" in listed  # each of these was read by the next stage
        for f in manifest["files"][:3]:
            local = tmp_path / "check.bin"
            s3.download_file(bucket, f"{prefix}/{payload}/{f['path']}", str(local))
            assert sha256_file(local) == f["sha256"]
    assert s3_pipeline["shards"][1].metrics["shard"] == [2, 3]
    # lineage: each artifact names its parents
    store = ArtifactStore(s3_pipeline["root"])
    assert store.require(s3_pipeline["dataset"].uri).parents == tuple(s.uri for s in s3_pipeline["shards"])
    assert store.require(s3_pipeline["stats"].uri).parents == (s3_pipeline["dataset"].uri,)


def test_render_replays_every_demo_with_rgb(s3_pipeline):
    frames = 0
    for shard in s3_pipeline["shards"]:
        m = shard.metrics
        assert m["success_ratio"] == 1.0 and m["failed_episodes"] == [] and m["device"] == "cpu"
        frames += m["frames"]
    # One more observation than actions per episode. Control-mode conversion may take extra steps, so
    # the replayed episodes can be longer than the demos but never shorter.
    assert frames - 3 == s3_pipeline["dataset"].metrics["frames"] >= s3_pipeline["demos"].metrics["steps"]


def test_second_run_of_each_stage_is_a_cache_hit(s3_pipeline):
    root = s3_pipeline["root"]
    again = [
        download(DownloadParams(env_id=ENV_ID, count=3, seed=10), root=root),
        render(
            RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=2, workers=1),
            root=root,
            demos=s3_pipeline["demos"].uri,
        ),
        convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[s.uri for s in s3_pipeline["shards"]]),
        stats(StatsParams(env_id=ENV_ID, action_horizon=HORIZON), root=root, dataset=s3_pipeline["dataset"].uri),
    ]
    before = [s3_pipeline["demos"], s3_pipeline["shards"][0], s3_pipeline["dataset"], s3_pipeline["stats"]]
    for b, a in zip(before, again):
        assert a.cache_hit and a.uri == b.uri and a.digest == b.digest


@pytest.fixture(scope="module")
def openpi_dataset(s3_pipeline, tmp_path_factory):
    """The converted dataset, fetched from S3 into HF_LEROBOT_HOME and opened by openpi's own loader."""
    from openpi.models import pi0_config
    from openpi.training import config as _config
    from openpi.training import data_loader as _data_loader

    from tasks.core.dataset import repo_id_for
    from tasks.policy.transforms import data_transforms, repack_transform

    store = ArtifactStore(s3_pipeline["root"])
    manifest, local = store.fetch(s3_pipeline["dataset"].uri, tmp_path_factory.mktemp("fetch"))
    repo_id = repo_id_for(ENV_ID, manifest.key)
    home = Path(os.environ["HF_LEROBOT_HOME"])
    shutil.copytree(local, home / repo_id, ignore=shutil.ignore_patterns("manifest.json"))
    spec = get_spec(ENV_ID)
    data_config = _config.DataConfig(repo_id=repo_id, action_sequence_keys=(ACTION_KEY,), prompt_from_task=True)
    raw = _data_loader.create_torch_dataset(data_config, HORIZON, pi0_config.Pi0Config(action_horizon=HORIZON))
    return _data_loader.TransformedDataset(raw, [*repack_transform(spec).inputs, *data_transforms(spec).inputs])


def test_openpi_loader_reads_the_dataset(s3_pipeline, openpi_dataset):
    spec = get_spec(ENV_ID)
    assert len(openpi_dataset) == s3_pipeline["dataset"].metrics["frames"]
    assert s3_pipeline["dataset"].metrics["episodes"] == 3
    item = openpi_dataset[5]
    assert item["image"]["base_0_rgb"].shape == (128, 128, 3) and item["image"]["base_0_rgb"].dtype == np.uint8
    assert item["image"]["base_0_rgb"].max() > 0  # a real rendered frame, not a black one
    assert not item["image"]["left_wrist_0_rgb"].any() and not item["image_mask"]["left_wrist_0_rgb"]
    assert item["image_mask"]["base_0_rgb"]
    assert item["state"].shape == (spec.state_dim,) and item["actions"].shape == (HORIZON, 7)
    assert item["prompt"] == spec.prompt
    assert np.abs(item["actions"]).max() <= 1.0  # pd_ee_delta_pose actions are normalised to [-1, 1]


def test_stats_equal_openpi_loader_reference(s3_pipeline, openpi_dataset, tmp_path):
    """Reference: openpi's compute_norm_stats loop (RunningStats over loader batches of 32, in order)."""
    from openpi.shared import normalize

    running = {"state": normalize.RunningStats(), "actions": normalize.RunningStats()}
    batch = []
    for i in range(len(openpi_dataset)):
        batch.append(openpi_dataset[i])
        if len(batch) == 32 or i == len(openpi_dataset) - 1:
            for key, rs in running.items():
                rs.update(np.stack([np.asarray(b[key]) for b in batch]))
            batch = []
    reference = {k: rs.get_statistics() for k, rs in running.items()}
    store = ArtifactStore(s3_pipeline["root"])
    _, local = store.fetch(s3_pipeline["stats"].uri, tmp_path)
    ours = normalize.load(local)
    for key in ("state", "actions"):
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_allclose(
                getattr(ours[key], field),
                getattr(reference[key], field),
                rtol=1e-6,
                atol=1e-9,
                err_msg=f"{key}.{field}",
            )
    assert ours["state"].mean.shape == (get_spec(ENV_ID).state_dim,) and ours["actions"].mean.shape == (7,)


# Which stages' cache keys each TaskSpec field reaches (directly; later stages follow through their parents).
SPEC_FIELD_READERS = {
    "prompt": {"convert", "train", "verify"},
    "state_keys": {"convert", "stats", "train", "verify"},
    "cameras": {"convert", "train", "verify"},
    "control_mode": {"render", "train", "verify"},
    "fps": {"render", "convert", "train", "verify"},
}


def test_each_spec_field_is_in_the_keys_of_exactly_the_stages_that_read_it():
    import dataclasses

    from tasks.core.specs import STAGE_SPEC_FIELDS

    spec = get_spec(ENV_ID)
    edits = {
        "prompt": "lift the cube",
        "state_keys": ("agent/qpos[0:9]", "extra/tcp_pose", "extra/goal_pos[0:2]"),
        "cameras": (("hand_camera", "left_wrist_0_rgb"),),
        "control_mode": "pd_joint_pos",
        "fps": 30,
    }
    for field, value in edits.items():
        edited = dataclasses.replace(spec, **{field: value})
        changed = {stage for stage in STAGE_SPEC_FIELDS if edited.digest(stage) != spec.digest(stage)}
        assert changed == SPEC_FIELD_READERS[field], field


def test_editing_a_spec_rebuilds_the_stages_that_read_it_and_reuses_the_rest(demo_set, monkeypatch):
    """The fix-a-spec loop a new user goes through: a new prompt must not come back as a cached dataset."""
    import dataclasses

    from tasks.core import specs

    root, demos = demo_set
    spec = get_spec(ENV_ID)

    def run():
        shard = render(RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=2), root=root, demos=demos)
        dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[shard.uri])
        return shard, dataset, stats(StatsParams(env_id=ENV_ID, action_horizon=HORIZON), root=root, dataset=dataset.uri)

    before = run()
    monkeypatch.setitem(specs.TASK_SPECS, ENV_ID, dataclasses.replace(spec, prompt="lift the cube to the green dot"))
    after = run()
    assert after[0].cache_hit and after[0].uri == before[0].uri  # render does not read the prompt
    assert not after[1].cache_hit and after[1].uri != before[1].uri  # convert writes it into every frame
    assert not after[2].cache_hit and after[2].uri != before[2].uri  # stats of a new dataset
    assert after[1].metrics["prompt"] == "lift the cube to the green dot"
    # a render run parameter that contradicts the spec is refused, naming both
    with pytest.raises(ValueError, match="contradicts the TaskSpec"):
        render(RenderParams(env_id=ENV_ID, control_mode="pd_joint_pos"), root=root, demos=demos)
