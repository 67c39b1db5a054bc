"""stats: openpi norm stats of a converted dataset, on exactly the arrays the model will see.

Same result as openpi's `scripts/compute_norm_stats.py` (frames in dataset order, batches of
`batch_size`, action chunks of `action_horizon` padded at episode ends as LeRobot pads them, the
task's `ManiSkillInputs` transform, openpi's `normalize.RunningStats`), but it reads only the state and
action columns, one episode at a time, instead of decoding every image through the data loader.
Written as openpi's `norm_stats.json` (`normalize.save`). Refuses widths that differ from the model
input and state dimensions whose std is near zero (normalising them would blow live values up).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tasks.core import cli
from tasks.core.checks import check_norm_stats_widths, model_input_widths
from tasks.core.dataset import ACTION_KEY, STATE_KEY
from tasks.core.params import StatsParams
from tasks.core.specs import TaskSpec, get_spec
from tasks.core.stage import StageResult, require, run_stage
from tasks.core.store import ArtifactStore

STAGE = "stats"
CODE_VERSION = "1"
# How the stats stage words a width mismatch: the stats were just computed from the dataset, so the dataset is stale.
WIDTH_MISMATCH = (
    "{key} stats have width {got} but the model input for {env_id} has width {expected}; "
    "recompute stats from a dataset converted with the current TaskSpec"
)


class StatsError(ValueError):
    """The statistics would make training fail or silently misbehave."""


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """(T, A) -> (T, H, A): frame t gets actions t..t+H-1, repeating the last action past the episode end
    (what LeRobot's delta_timestamps query returns at episode boundaries)."""
    T = len(actions)
    idx = np.minimum(np.arange(T)[:, None] + np.arange(horizon)[None, :], T - 1)
    return actions[idx]


def iter_episode_columns(
    dataset_root: Path, repo_id: str = "maniskill/stats"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (state, actions) per episode in dataset order, reading only those parquet columns."""
    import pyarrow.parquet as pq
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(repo_id, root=dataset_root)
    for ep_index in sorted(meta.episodes):
        table = pq.read_table(
            dataset_root / meta.get_data_file_path(ep_index), columns=[STATE_KEY, ACTION_KEY, "frame_index"]
        )
        order = np.argsort(table.column("frame_index").to_numpy())
        state = np.stack(table.column(STATE_KEY).to_numpy(zero_copy_only=False))[order].astype(np.float32)
        actions = np.stack(table.column(ACTION_KEY).to_numpy(zero_copy_only=False))[order].astype(np.float32)
        yield state, actions


def transformed_batches(
    spec: TaskSpec, dataset_root: Path, horizon: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of model-ready `state` (B, S) and `actions` (B, H, A), in dataset order, through ManiSkillInputs."""
    from tasks.policy.transforms import data_transforms

    transform = data_transforms(spec).inputs[0]
    pending_state, pending_actions, n = [], [], 0
    for state, actions in iter_episode_columns(dataset_root):
        pending_state.append(state)
        pending_actions.append(action_chunks(actions, horizon))
        n += len(state)
        if n >= batch_size:
            all_state, all_actions = np.concatenate(pending_state), np.concatenate(pending_actions)
            full = (n // batch_size) * batch_size
            for i in range(0, full, batch_size):
                yield transform({"state": all_state[i : i + batch_size], "actions": all_actions[i : i + batch_size]})
            pending_state, pending_actions, n = [all_state[full:]], [all_actions[full:]], n - full
    if n:
        yield transform({"state": np.concatenate(pending_state), "actions": np.concatenate(pending_actions)})


def check_stats(spec: TaskSpec, norm_stats: dict, min_std: float) -> None:
    """Refuses stats training could not use: widths other than the spec's or the model's (tasks/core/checks.py),
    and state dimensions whose std is near zero."""
    check_norm_stats_widths(
        spec.env_id,
        {key: s.mean.shape[-1] for key, s in norm_stats.items()},
        model_input_widths(spec),
        error=StatsError,
        mismatch=WIDTH_MISMATCH,
    )
    names = {"state": spec.state_dim_names()}
    # Only state: a live observation that strays from a near-constant training value is blown up by ~1/std.
    # Near-constant *actions* are harmless (normalised targets still have unit scale; a constant gripper
    # command unnormalises back to that constant), and tasks like PushCube never open the gripper.
    for key in ("state",):
        std = np.asarray(norm_stats[key].std)
        flat = np.where(std < min_std)[0]
        if len(flat):
            dims = ", ".join(f"{names[key][i]} (std {std[i]:.2e})" for i in flat)
            raise StatsError(
                f"{key} dimensions with near-zero std (< {min_std}) in {spec.env_id}: {dims}. "
                "They are constant in the demos and would be scaled by ~1/std during normalisation; "
                "drop them from state_keys in tasks/core/specs.py or collect more varied demos."
            )


def compute_norm_stats(spec: TaskSpec, dataset_root: Path, horizon: int, batch_size: int) -> tuple[dict, int]:
    from openpi.shared import normalize

    running = {"state": normalize.RunningStats(), "actions": normalize.RunningStats()}
    frames = 0
    for batch in transformed_batches(spec, dataset_root, horizon, batch_size):
        for key, rs in running.items():
            rs.update(np.asarray(batch[key]))
        frames += len(batch["state"])
    return {key: rs.get_statistics() for key, rs in running.items()}, frames


def stats(params: StatsParams, root: str, dataset: str) -> StageResult:
    params.validate()
    spec = get_spec(params.env_id)
    store = ArtifactStore(root)
    parent = require(store, dataset, stage="convert", env_id=params.env_id, what="dataset")

    def build(out: Path) -> dict:
        from openpi.shared import normalize

        _, dataset_root = store.fetch(dataset, out.parent / "inputs")
        norm_stats, frames = compute_norm_stats(spec, dataset_root, params.action_horizon, params.batch_size)
        check_stats(spec, norm_stats, params.min_std)
        normalize.save(out, norm_stats)
        return {
            "frames": frames,
            "state_dim": spec.state_dim,
            "action_dim": spec.action_dim,
            "constant_action_dims": np.where(norm_stats["actions"].std < params.min_std)[0].tolist(),
            "action_horizon": params.action_horizon,
            "min_std": {k: float(np.min(v.std)) for k, v in norm_stats.items()},
        }

    return run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params={**dataclasses.asdict(params), "spec": spec.digest(STAGE)},
        parents=[parent],
        build=build,
    )


main = cli.cli(__doc__, StatsParams, stats, inputs={"dataset": False})

if __name__ == "__main__":
    raise SystemExit(main())
