"""Reading and checking ManiSkill trajectory files (`<name>.h5` + `<name>.json`).

Every check names the file and the episode, and says what to do about it, because a bad demo file
otherwise surfaces as a KeyError deep inside ManiSkill's replay or a shape error in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np


class DemoFileError(ValueError):
    """A trajectory file is unreadable, truncated or inconsistent with its JSON sidecar."""


def sidecar(h5_path: Path) -> Path:
    return Path(h5_path).with_suffix(".json")


def load_episodes(h5_path: Path) -> list[dict]:
    """Returns the sidecar's episode list after checking that every episode is in the H5 and readable."""
    h5_path = Path(h5_path)
    json_path = sidecar(h5_path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DemoFileError(
            f"{json_path}: JSON sidecar missing; ManiSkill writes <name>.h5 and <name>.json together"
        ) from None
    except json.JSONDecodeError as e:
        raise DemoFileError(f"{json_path}: not valid JSON ({e}); re-download or regenerate the demos") from None
    episodes = meta.get("episodes")
    if not isinstance(episodes, list) or "env_info" not in meta:
        raise DemoFileError(f"{json_path}: not a ManiSkill trajectory sidecar (no 'episodes'/'env_info')")
    try:
        h5 = h5py.File(h5_path, "r")
    except (OSError, ValueError) as e:
        raise DemoFileError(
            f"{h5_path}: cannot open as HDF5 ({e}); the file is corrupt or truncated - re-download or regenerate it"
        ) from None
    with h5:
        for ep in episodes:
            name = f"traj_{ep['episode_id']}"
            if name not in h5:
                raise DemoFileError(
                    f"{h5_path}: episode {ep['episode_id']} is listed in {json_path.name} but '{name}' is not in the H5"
                )
            try:
                actions = h5[name]["actions"][:]
            except (KeyError, OSError, ValueError) as e:
                raise DemoFileError(
                    f"{h5_path}: episode {ep['episode_id']} ('{name}/actions') is unreadable ({e}); the file is corrupt or truncated"
                ) from None
            steps = ep.get("elapsed_steps")
            if steps is not None and steps != len(actions):
                raise DemoFileError(
                    f"{h5_path}: episode {ep['episode_id']} has {len(actions)} actions but {json_path.name} says elapsed_steps={steps}; "
                    "the H5 and its JSON sidecar do not belong together"
                )
    return episodes


def write_subset(src_h5: Path, episodes: list[dict], dst_h5: Path) -> None:
    """Writes a trajectory file holding only `episodes` of `src_h5` (ids kept), with its sidecar."""
    meta = json.loads(sidecar(src_h5).read_text())
    with h5py.File(src_h5, "r") as src, h5py.File(dst_h5, "w") as dst:
        for ep in episodes:
            name = f"traj_{ep['episode_id']}"
            src.copy(name, dst, name)
    meta["episodes"] = episodes
    sidecar(dst_h5).write_text(json.dumps(meta, indent=2))


def read_episode(h5: h5py.File, episode_id: int, camera: str, h5_path: Path) -> dict:
    """Reads one rendered episode fully (one episode in memory at a time)."""
    name = f"traj_{episode_id}"
    try:
        group = h5[name]
        obs = group["obs"]
    except KeyError:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} has no '{name}/obs' group; render the demos first"
        ) from None
    cameras = sorted(c for c in obs["sensor_data"] if "rgb" in obs["sensor_data"][c]) if "sensor_data" in obs else []
    if cameras and camera not in cameras:
        raise DemoFileError(
            f"{h5_path}: no camera {camera!r} in the rendered episodes; they have {cameras}. "
            "Fix the camera names of the TaskSpec in tasks/core/specs.py"
        )
    if not cameras:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} has no images at obs/sensor_data/{camera}/rgb - this looks like a "
            "state-only file; run the render stage (replay with obs_mode=rgb) before convert"
        )
    try:
        data = {
            "actions": group["actions"][:],
            "rgb": obs["sensor_data"][camera]["rgb"][:],
            "obs": {
                g: {k: obs[g][k][:] for k in obs[g] if isinstance(obs[g][k], h5py.Dataset)}
                for g in ("agent", "extra")
                if g in obs
            },
        }
    except (OSError, ValueError) as e:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} is unreadable ({e}); the file is corrupt or truncated"
        ) from None
    if len(data["rgb"]) != len(data["actions"]) + 1:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id} has {len(data['rgb'])} images for {len(data['actions'])} actions (expected one more image than actions)"
        )
    if data["rgb"].dtype != np.uint8 or data["rgb"].ndim != 4 or data["rgb"].shape[-1] != 3:
        raise DemoFileError(
            f"{h5_path}: episode {episode_id}: images are {data['rgb'].dtype}{data['rgb'].shape}, expected uint8 (T,H,W,3)"
        )
    return data


def episodes_fingerprint(h5_path: Path, episodes: list[dict]) -> str:
    """A digest of exactly what replaying `episodes` reads: the env info, their sidecar entries and H5 data.

    Render keys on it rather than on the whole demo set, so a demo set that grew keeps the keys of the
    shards it already had.
    """
    import hashlib

    h = hashlib.sha256()
    meta = json.loads(sidecar(h5_path).read_text())
    h.update(json.dumps(meta.get("env_info"), sort_keys=True).encode())

    with h5py.File(h5_path, "r") as f:
        for ep in episodes:
            h.update(json.dumps(ep, sort_keys=True).encode())
            datasets: list[tuple[str, h5py.Dataset]] = []
            # visititems calls back at once, inside this iteration: binding `datasets` late is what is meant
            f[f"traj_{ep['episode_id']}"].visititems(
                lambda name, obj: datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None  # noqa: B023
            )
            for name, ds in sorted(datasets, key=lambda x: x[0]):
                data = np.ascontiguousarray(ds[()])
                h.update(f"{name}\0{data.dtype.str}\0{data.shape}\n".encode())
                h.update(data.tobytes())
    return h.hexdigest()
