"""P2: convert frames/s, our convert vs a per-frame `add_frame` loop in the style of openpi's LIBERO converter."""

from __future__ import annotations

import json
import shutil
import sys

import h5py

from bench.common import ENV_ID, OUT, local, rendered, report, timer
from tasks.convert import ConvertParams, dataset_features, write_dataset
from tasks.core.dataset import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY
from tasks.core.demo_files import read_episode
from tasks.core.specs import get_spec


def naive_convert(h5_path, root, spec) -> int:
    """openpi's examples/libero/convert_libero_data_to_lerobot.py, applied to a rendered ManiSkill file."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset.create(
        repo_id="bench/naive",
        robot_type="panda",
        fps=spec.fps,
        root=root,
        features=dataset_features(spec, (128, 128, 3)),
        use_videos=False,
        image_writer_threads=10,
        image_writer_processes=5,
    )
    frames = 0
    episodes = json.loads(h5_path.with_suffix(".json").read_text())["episodes"]
    with h5py.File(h5_path, "r") as h5:
        for ep in episodes:
            data = read_episode(h5, ep["episode_id"], "base_camera", h5_path)
            state = spec.assemble_state(data["obs"])
            for t in range(len(data["actions"])):
                dataset.add_frame(
                    {
                        IMAGE_KEY_PREFIX + "base_camera": data["rgb"][t],
                        STATE_KEY: state[t],
                        ACTION_KEY: data["actions"][t].astype("float32"),
                    },
                    task=spec.prompt,
                )
                frames += 1
            dataset.save_episode()
    dataset.stop_image_writer()
    return frames


def main(count: int = 20) -> dict:
    spec = get_spec(ENV_ID)
    r = rendered(count)
    h5 = local(r) / "trajectory.h5"
    naive_root, ours_root = OUT / "p2_naive", OUT / "p2_ours"
    for p in (naive_root, ours_root):
        shutil.rmtree(p, ignore_errors=True)
    with timer() as t_naive:
        n_frames = naive_convert(h5, naive_root, spec)
    with timer() as t_ours:
        counts = write_dataset(spec, [h5], ours_root, "bench/ours", ConvertParams(env_id=ENV_ID))
    assert counts["frames"] == n_frames
    naive_fps, ours_fps = n_frames / t_naive["s"], n_frames / t_ours["s"]
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*.parquet")) / 1e6  # noqa: E731
    return report(
        f"P2 convert, {count} episodes / {n_frames} frames of {ENV_ID} (128x128 rgb) -> LeRobot v2.1",
        [
            ("naive add_frame loop (LIBERO style): s", t_naive["s"], "s"),
            ("naive frames/s", naive_fps, "fps"),
            ("naive parquet size", size(naive_root), "MB"),
            ("ours: s", t_ours["s"], "s"),
            ("ours frames/s", ours_fps, "fps"),
            ("ours parquet size", size(ours_root), "MB"),
        ],
        ours_fps / naive_fps,
        3.0,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
