"""convert: rendered ManiSkill trajectories (one or more shards) -> a LeRobot dataset openpi can train on.

The dataset is written with LeRobot's own writer (`LeRobotDataset.create` / `save_episode`) in the
format of the lerobot that openpi pins (v2.1): images as `image` features (HWC uint8, PNG inside
parquet - no video codec needed), `observation.state` assembled from the TaskSpec, 7-d `action`, the
task prompt on every frame, fps = the env's control frequency. One episode is in memory at a time.

Faster than a per-frame `add_frame` loop because each episode's buffer is filled in bulk from whole
H5 arrays and its PNGs are encoded on a thread pool at a low zlib level; LeRobot still validates the
buffer, embeds the images, writes parquet and computes the episode stats. Before publishing, the
dataset is read back through LeRobot and its episode count, frame count and shapes are checked.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import PIL.Image

from tasks.core import cli
from tasks.core.dataset import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY
from tasks.core.demo_files import DemoFileError, read_episode, sidecar
from tasks.core.errors import NotRetryable
from tasks.core.params import ConvertParams
from tasks.core.specs import TaskSpec, get_spec
from tasks.core.stage import StageResult, require, run_stage
from tasks.core.store import ArtifactStore

STAGE = "convert"
CODE_VERSION = "1"


class ConvertError(NotRetryable):
    """The rendered input cannot become a valid dataset."""


def dataset_features(spec: TaskSpec, image_shape: tuple[int, int, int]) -> dict:
    features = {
        f"{IMAGE_KEY_PREFIX}{sensor}": {"dtype": "image", "shape": image_shape, "names": ["height", "width", "channel"]}
        for sensor, _ in spec.cameras
    }
    features[STATE_KEY] = {"dtype": "float32", "shape": (spec.state_dim,), "names": [list(map(str, spec.state_keys))]}
    features[ACTION_KEY] = {
        "dtype": "float32",
        "shape": (spec.action_dim,),
        "names": [f"a{i}" for i in range(spec.action_dim)],
    }
    return features


def _episode_arrays(spec: TaskSpec, h5: h5py.File, episode_id: int, h5_path: Path) -> dict:
    cams = {}
    data = None
    for sensor, _ in spec.cameras:
        data = read_episode(h5, episode_id, sensor, h5_path)
        cams[sensor] = data["rgb"][:-1]  # T+1 observations for T actions: frame t pairs obs t with action t
    actions = data["actions"].astype(np.float32)
    if actions.ndim != 2 or actions.shape[1] != spec.action_dim:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} has actions of shape {actions.shape}, expected (T, {spec.action_dim}); "
            f"render with control_mode={spec.control_mode}"
        )
    state = spec.assemble_state(data["obs"])[:-1]
    if state.shape != (len(actions), spec.state_dim):
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} state has shape {state.shape}, expected ({len(actions)}, {spec.state_dim})"
        )
    if not (np.isfinite(state).all() and np.isfinite(actions).all()):
        raise DemoFileError(f"{h5_path}: episode {episode_id} holds NaN or infinite state/actions")
    return {"images": cams, "state": state, "actions": actions}


def _write_pngs(pool: ThreadPoolExecutor, frames: np.ndarray, paths: list[Path], level: int) -> None:
    paths[0].parent.mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        PIL.Image.fromarray(frames[i]).save(paths[i], compress_level=level)

    list(pool.map(save, range(len(paths))))


def write_dataset(spec: TaskSpec, inputs: list[Path], dataset_root: Path, repo_id: str, params: ConvertParams) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = None
    threads = params.image_threads or 2 * (os.cpu_count() or 1)
    n_episodes = n_frames = longest = 0
    with ThreadPoolExecutor(threads) as pool:
        for h5_path in inputs:
            episodes = json.loads(sidecar(h5_path).read_text())["episodes"]
            try:
                h5 = h5py.File(h5_path, "r")
            except OSError as e:
                raise DemoFileError(f"{h5_path}: cannot open as HDF5 ({e}); the file is corrupt or truncated") from None
            with h5:
                for ep in episodes:
                    arrays = _episode_arrays(spec, h5, ep["episode_id"], h5_path)
                    T = len(arrays["actions"])
                    if ds is None:
                        shape = next(iter(arrays["images"].values())).shape[1:]
                        ds = LeRobotDataset.create(
                            repo_id=repo_id,
                            fps=spec.fps,
                            features=dataset_features(spec, shape),
                            root=dataset_root,
                            robot_type="panda",
                            use_videos=False,
                        )
                    buf = ds.create_episode_buffer()
                    buf["size"] = T
                    buf["task"] = [spec.prompt] * T
                    buf["frame_index"] = list(range(T))
                    buf["timestamp"] = [i / spec.fps for i in range(T)]
                    buf[STATE_KEY] = list(arrays["state"])
                    buf[ACTION_KEY] = list(arrays["actions"])
                    for sensor, frames in arrays["images"].items():
                        key = IMAGE_KEY_PREFIX + sensor
                        paths = [ds._get_image_file_path(buf["episode_index"], key, i) for i in range(T)]
                        _write_pngs(pool, frames, paths, params.png_compress_level)
                        buf[key] = [str(p) for p in paths]
                    ds.episode_buffer = buf
                    ds.save_episode()
                    # LeRobot keeps every saved episode in an in-memory table; drop it so memory stays flat.
                    ds.hf_dataset = ds.create_hf_dataset()
                    shutil.rmtree(dataset_root / "images", ignore_errors=True)
                    n_episodes += 1
                    n_frames += T
                    longest = max(longest, T)
    if ds is None:
        raise ConvertError(f"no episodes in {[str(p) for p in inputs]}: nothing to convert")
    return {"episodes": n_episodes, "frames": n_frames, "longest_episode": longest}


def check_dataset(spec: TaskSpec, dataset_root: Path, repo_id: str, expect_episodes: int, expect_frames: int) -> dict:
    """Reads the dataset back through LeRobot and checks counts and shapes."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=dataset_root)
    problems = []
    if ds.num_episodes != expect_episodes:
        problems.append(f"{ds.num_episodes} episodes, expected {expect_episodes}")
    if ds.num_frames != expect_frames:
        problems.append(f"{ds.num_frames} frames, expected {expect_frames}")
    if ds.fps != spec.fps:
        problems.append(f"fps {ds.fps}, expected {spec.fps}")
    image_shape = None
    for idx in (0, len(ds) - 1):
        item = ds[idx]
        for sensor, _ in spec.cameras:
            img = item[IMAGE_KEY_PREFIX + sensor]
            image_shape = tuple(img.shape)
            if img.ndim != 3 or img.shape[0] != 3:
                problems.append(f"frame {idx}: image shape {tuple(img.shape)}, expected (3, H, W)")
        if tuple(item[STATE_KEY].shape) != (spec.state_dim,):
            problems.append(f"frame {idx}: state shape {tuple(item[STATE_KEY].shape)}, expected ({spec.state_dim},)")
        if tuple(item[ACTION_KEY].shape) != (spec.action_dim,):
            problems.append(f"frame {idx}: action shape {tuple(item[ACTION_KEY].shape)}, expected ({spec.action_dim},)")
        if item["task"] != spec.prompt:
            problems.append(f"frame {idx}: task {item['task']!r}, expected {spec.prompt!r}")
    if problems:
        raise ConvertError(f"dataset read back from {dataset_root} is wrong: " + "; ".join(problems))
    return {"image_shape_chw": list(image_shape or ())}


def convert(params: ConvertParams, root: str, rendered: list[str]) -> StageResult:
    params.validate()
    spec = get_spec(params.env_id)
    store = ArtifactStore(root)
    if not rendered:
        raise ValueError("convert needs at least one rendered artifact URI")
    parents = [require(store, uri, stage="render", env_id=params.env_id, what="rendered") for uri in rendered]

    def build(out: Path) -> dict:
        inputs = [store.fetch(uri, out.parent / "inputs")[1] / "trajectory.h5" for uri in rendered]
        repo_id = "maniskill/pending"  # the final repo id depends on the key; the files do not
        staging = out.parent / "lerobot"
        counts = write_dataset(spec, inputs, staging, repo_id, params)
        shape = check_dataset(spec, staging, repo_id, counts["episodes"], counts["frames"])
        for child in staging.iterdir():
            shutil.move(str(child), out / child.name)
        return {
            **counts,
            **shape,
            "fps": spec.fps,
            "state_dim": spec.state_dim,
            "action_dim": spec.action_dim,
            "prompt": spec.prompt,
            "cameras": [s for s, _ in spec.cameras],
        }

    return run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params={**params.key_params(), "spec": spec.digest(STAGE)},
        parents=parents,
        build=build,
    )


main = cli.cli(__doc__, ConvertParams, convert, inputs={"rendered": True})

if __name__ == "__main__":
    raise SystemExit(main())
