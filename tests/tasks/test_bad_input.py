"""Bad input fails early with a message naming the thing and the fix, and publishes nothing."""

import json
import shutil
import time
from pathlib import Path

import boto3
import h5py
import pytest

from tasks.convert import ConvertParams, convert
from tasks.core.demo_files import DemoFileError
from tasks.core.specs import SpecError
from tasks.core.store import ArtifactStore
from tasks.download import DownloadError, DownloadParams, download
from tasks.render import RenderError, RenderParams, render
from tasks.stats import StatsParams, stats
from tests.conftest import publish_dir

ENV_ID = "PickCube-v1"


def _manifests(root: str, stage: str) -> list[Path]:
    return list(Path(root[len("file://") :]).glob(f"*/{stage}/*/manifest.json"))


def _demo_copy(demo_set, tmp_path) -> Path:
    root, demos = demo_set
    src = ArtifactStore(root).local_path(demos)
    dst = tmp_path / "demo"
    dst.mkdir()
    for name in ("trajectory.h5", "trajectory.json"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.parametrize("stage", ["download", "render", "convert", "stats"])
def test_unknown_env_id_is_refused_before_any_work(stage, local_root):
    call = {
        "download": lambda: download(DownloadParams(env_id="PickCub-v1"), root=local_root),
        "render": lambda: render(
            RenderParams(env_id="PickCub-v1"), root=local_root, demos=f"{local_root}/x/download/k"
        ),
        "convert": lambda: convert(
            ConvertParams(env_id="PickCub-v1"), root=local_root, rendered=[f"{local_root}/x/render/k"]
        ),
        "stats": lambda: stats(StatsParams(env_id="PickCub-v1"), root=local_root, dataset=f"{local_root}/x/convert/k"),
    }[stage]
    with pytest.raises(SpecError, match="unknown env id 'PickCub-v1'"):
        call()
    assert not Path(local_root[len("file://") :]).exists()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(count=0), "demo count must be between 1"),
        (dict(count=-5), "demo count must be between 1"),
        (dict(count=10**9), "demo count must be between 1"),
        (dict(source="ftp"), "unknown demo source"),
        (dict(source="s3"), "needs source_uri"),
    ],
)
def test_bad_download_params(params, message, local_root):
    with pytest.raises(ValueError, match=message):
        download(DownloadParams(env_id=ENV_ID, **params), root=local_root)


def test_bad_render_params(local_root):
    with pytest.raises(ValueError, match="unknown control mode"):
        render(RenderParams(env_id=ENV_ID, control_mode="pd_teleport"), root=local_root, demos="")
    with pytest.raises(ValueError, match="bad shard"):
        render(RenderParams(env_id=ENV_ID, shard_start=5, shard_stop=2), root=local_root, demos="")


def test_hub_source_fails_fast_offline(local_root):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach huggingface.co.*source=motionplanning"):
        download(DownloadParams(env_id=ENV_ID, source="hub"), root=local_root)
    assert time.monotonic() - t0 < 30
    assert not _manifests(local_root, "download")


@pytest.mark.sim
def test_s3_mirror_source_copies_a_demo_set(demo_set, s3_root, tmp_path):
    demo = _demo_copy(demo_set, tmp_path)
    bucket = s3_root[len("s3://") :].split("/")[0]
    for name in ("trajectory.h5", "trajectory.json"):
        boto3.client("s3").upload_file(str(demo / name), bucket, f"mirror/PickCube-v1/{name}")
    result = download(
        DownloadParams(env_id=ENV_ID, source="s3", source_uri=f"s3://{bucket}/mirror/PickCube-v1", count=2),
        root=s3_root,
    )
    assert result.metrics["episodes"] == 2
    with pytest.raises(DownloadError, match="fewer than count=9"):
        download(
            DownloadParams(env_id=ENV_ID, source="s3", source_uri=f"s3://{bucket}/mirror/PickCube-v1", count=9),
            root=s3_root,
        )
    with pytest.raises(DownloadError, match="not found"):
        download(
            DownloadParams(env_id=ENV_ID, source="s3", source_uri=f"s3://{bucket}/nothing-here", count=1), root=s3_root
        )


@pytest.mark.sim
def test_truncated_h5_names_the_file(demo_set, local_root, tmp_path):
    demo = _demo_copy(demo_set, tmp_path)
    h5 = demo / "trajectory.h5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    store = ArtifactStore(local_root)
    bad = publish_dir(store, ENV_ID, "download", demo, tag="truncated")
    with pytest.raises(DemoFileError, match=r"trajectory\.h5.*(corrupt or truncated)"):
        render(RenderParams(env_id=ENV_ID), root=local_root, demos=bad)
    assert not _manifests(local_root, "render")


@pytest.mark.sim
def test_h5_disagreeing_with_its_sidecar_names_the_episode(demo_set, local_root, tmp_path):
    demo = _demo_copy(demo_set, tmp_path)
    meta = json.loads((demo / "trajectory.json").read_text())
    meta["episodes"][1]["elapsed_steps"] += 7
    (demo / "trajectory.json").write_text(json.dumps(meta))
    bad = publish_dir(ArtifactStore(local_root), ENV_ID, "download", demo, tag="sidecar")
    with pytest.raises(DemoFileError, match="episode 1 has .* actions but trajectory.json says"):
        render(RenderParams(env_id=ENV_ID), root=local_root, demos=bad)


@pytest.mark.sim
def test_state_only_h5_given_to_convert(demo_set, local_root, tmp_path):
    store = ArtifactStore(local_root)
    demo = _demo_copy(demo_set, tmp_path)
    # as a render artifact (e.g. replayed with obs_mode=state): the file has no camera images
    fake_render = publish_dir(store, ENV_ID, "render", demo, tag="state-only")
    with pytest.raises(DemoFileError, match="no images at obs/sensor_data/base_camera/rgb.*render stage"):
        convert(ConvertParams(env_id=ENV_ID), root=local_root, rendered=[fake_render])
    # the demos artifact itself, passed where a rendered one belongs
    demos = publish_dir(store, ENV_ID, "download", demo, tag="demos")
    with pytest.raises(ValueError, match="is a download artifact; this takes a render artifact"):
        convert(ConvertParams(env_id=ENV_ID), root=local_root, rendered=[demos])
    assert not _manifests(local_root, "convert")


@pytest.mark.sim
def test_zero_successful_replays_fails_and_names_episodes(demo_set, local_root, tmp_path):
    demo = _demo_copy(demo_set, tmp_path)
    with h5py.File(demo / "trajectory.h5", "r+") as f:
        for name in f:
            actions = f[name]["actions"]
            actions[...] = actions[0]  # hold the first joint target: the robot never reaches the cube
    bad = publish_dir(ArtifactStore(local_root), ENV_ID, "download", demo, tag="frozen")
    with pytest.raises(RenderError, match=r"only 0/4 demos .* failed demo episodes: \[0, 1, 2, 3\]"):
        render(RenderParams(env_id=ENV_ID), root=local_root, demos=bad)
    assert not _manifests(local_root, "render")


@pytest.mark.sim
def test_a_wrong_camera_name_is_refused_before_rendering_with_the_valid_ones(demo_set, rendered_set, monkeypatch):
    import dataclasses

    from tasks.core import specs

    wrong = dataclasses.replace(
        specs.TASK_SPECS[ENV_ID],
        cameras=(("hand_camera", "left_wrist_0_rgb"),),
        state_keys=("agent/qpos[0:9]", "extra/obj_pose"),
        state_widths=(9, 7),
    )
    monkeypatch.setitem(specs.TASK_SPECS, ENV_ID, wrong)
    root, demos = demo_set
    started = time.monotonic()
    with pytest.raises(RenderError) as refused:
        render(RenderParams(env_id=ENV_ID, shard_stop=1), root=root, demos=demos)
    message = str(refused.value)
    assert (
        "camera 'hand_camera' is not an RGB sensor of PickCube-v1 (robot panda); its sensors are ['base_camera']"
        in message
    )
    assert "'extra/obj_pose'" in message and "'extra/goal_pos'" in message and "state mode only" in message
    assert time.monotonic() - started < 60  # before any rendering
    # an already rendered file without the camera: convert names the cameras it has
    with pytest.raises(
        DemoFileError, match=r"no camera 'hand_camera' in the rendered episodes; they have \['base_camera'\]"
    ):
        convert(ConvertParams(env_id=ENV_ID), root=rendered_set[0], rendered=[rendered_set[1]])


@pytest.mark.sim
def test_a_motion_planner_that_cannot_succeed_stops_with_the_reason(local_root, monkeypatch):
    """ManiSkill 3.0.1's DrawTriangle solution raises on every seed; its generator would try seeds forever."""
    import dataclasses

    from tasks.core import specs

    monkeypatch.setitem(
        specs.TASK_SPECS,
        "DrawTriangle-v1",
        dataclasses.replace(specs.TASK_SPECS[ENV_ID], env_id="DrawTriangle-v1", action_dim=6),
    )
    started = time.monotonic()
    with pytest.raises(
        DownloadError,
        match=r"DrawTriangle-v1 failed on 10 seeds in a row from seed 0 \(last error: "
        r"TypeError: .*source=hub or source=s3",
    ):
        download(DownloadParams(env_id="DrawTriangle-v1", count=2), root=local_root)
    assert time.monotonic() - started < 120 and not _manifests(local_root, "download")
