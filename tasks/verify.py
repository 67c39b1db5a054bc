"""verify: load a trained checkpoint the way users serve it, and measure it on held-out data and in the sim.

1. `policy_config.create_trained_policy` loads the checkpoint (what openpi's policy server does), with
   the same TrainConfig the train stage used (tasks/train_configs.py).
2. Open-loop, on held-out real frames: a dataset converted from demos that training never saw (the
   pipeline makes it from a disjoint seed range). For evenly spaced frames, the predicted action chunk is
   compared with the demonstrated one: shape `(action_horizon, action_dim)`, finiteness, error per
   dimension, inference latency.
3. Closed-loop: the policy drives ManiSkill for `episodes` seeded episodes (seeds disjoint from the demos),
   executing `execute_steps` actions of each predicted chunk before replanning, up to the spec's step limit;
   the success rate is the figure users care about.
4. `metrics.json` and a self-contained `report.html` (camera frames, loss curve, predicted vs demonstrated
   actions per dimension, metrics table, lineage).

`passed` is true when every prediction had the right shape and was finite and, if thresholds are set,
the action error and success rate meet them. The promote stage reads it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks import common
from tasks.artifacts import ArtifactStore, Manifest, StageResult, run_stage
from tasks.specs import TaskSpec, get_spec

STAGE = "verify"
CODE_VERSION = "2"  # 2: the report leaves a place for the run's stage table
EVAL_SEED_BASE = 1_000_000  # closed-loop seeds start here; demos are generated from small seeds


class VerifyError(ValueError):
    """The checkpoint or the held-out data cannot be verified; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class VerifyParams:
    env_id: str
    holdout_frames: int = 8  # open-loop frames, evenly spaced over the held-out dataset
    episodes: int = 4  # closed-loop episodes (0: skip the rollout)
    max_steps: int = 0  # per episode; 0: the spec's eval_max_steps
    execute_steps: int = 0  # actions executed per predicted chunk; 0: half the action horizon
    seed: int = 0
    max_action_mae: float = 0.0  # pass threshold on the open-loop mean absolute action error (env units); 0: none
    min_success_rate: float = 0.0  # pass threshold on closed-loop success
    device: str = "auto"  # render device for the rollout: auto | cpu | gpu (not part of the cache key)

    def validate(self) -> None:
        get_spec(self.env_id)
        if not 1 <= self.holdout_frames <= 10_000:
            raise ValueError(f"holdout_frames must be 1..10000, got {self.holdout_frames}")
        if not 0 <= self.episodes <= 10_000:
            raise ValueError(f"episodes must be 0..10000, got {self.episodes}")
        if not 0 <= self.max_steps <= 100_000 or self.execute_steps < 0:
            raise ValueError("max_steps must be 0..100000 and execute_steps >= 0")
        if self.max_action_mae < 0 or not 0 <= self.min_success_rate <= 1:
            raise ValueError("max_action_mae must be >= 0 and min_success_rate within [0, 1]")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"unknown device {self.device!r}: use auto, cpu or gpu")

    def key_params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("device")
        return d


def load_policy(spec: TaskSpec, train_manifest: Manifest, checkpoint_dir: Path):
    """The trained policy through openpi's own loader, with the TrainConfig that trained it."""
    from openpi.policies import policy_config

    from tasks.tokenizer import ensure_tokenizer
    from tasks.train_configs import for_task

    ensure_tokenizer()
    p = train_manifest.params
    from tasks.tokenizer import is_offline_stand_in

    if p["preset"] != "tiny" and is_offline_stand_in():
        raise VerifyError(f"{train_manifest.uri} is a {p['preset']} checkpoint, but openpi's tokenizer cache holds the "
                          "offline stand-in: point OPENPI_DATA_HOME at a cache with the real PaliGemma tokenizer")
    config = for_task(spec.env_id, p["preset"], action_horizon=p["action_horizon"],
                      assets_dir=checkpoint_dir / "assets")
    return policy_config.create_trained_policy(config, checkpoint_dir, default_prompt=spec.prompt), config


def policy_input(spec: TaskSpec, images: dict[str, np.ndarray], state: np.ndarray) -> dict:
    """What the policy takes, from a dataset frame or a live observation (ManiSkillInputs does the rest)."""
    return {"images": images, "state": np.asarray(state, dtype=np.float32), "prompt": spec.prompt}


def open_loop(policy, spec: TaskSpec, holdout_dir: Path, horizon: int, n_frames: int) -> dict[str, Any]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.convert import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY

    ds = LeRobotDataset("maniskill/holdout", root=holdout_dir,
                        delta_timestamps={ACTION_KEY: [t / spec.fps for t in range(horizon)]})
    if len(ds) == 0:
        raise VerifyError(f"held-out dataset {holdout_dir} has no frames; convert a non-empty held-out demo set")
    indices = sorted(set(np.linspace(0, len(ds) - 1, min(n_frames, len(ds))).round().astype(int).tolist()))
    predicted, demonstrated, latencies, shapes_ok, finite_ok, samples = [], [], [], True, True, []
    for i, idx in enumerate(indices):
        item = ds[idx]
        images = {sensor: item[IMAGE_KEY_PREFIX + sensor].numpy() for sensor, _ in spec.cameras}
        t0 = time.monotonic()
        out = policy.infer(policy_input(spec, images, item[STATE_KEY].numpy()))
        dt = time.monotonic() - t0
        if i > 0:  # the first call includes jit compilation
            latencies.append(dt)
        actions = np.asarray(out["actions"])
        shapes_ok &= actions.shape == (horizon, spec.action_dim)
        finite_ok &= bool(np.isfinite(actions).all())
        predicted.append(actions)
        demonstrated.append(item[ACTION_KEY].numpy())
        if len(samples) < 4:
            from tasks.openpi_data import to_hwc_uint8

            samples.append({"frame": int(idx), "image": to_hwc_uint8(next(iter(images.values())))})
    pred = np.stack(predicted) if shapes_ok else None
    demo = np.stack(demonstrated)
    metrics: dict[str, Any] = {
        "holdout_frames": len(indices), "output_shape": list(predicted[0].shape), "shape_ok": bool(shapes_ok),
        "finite": bool(finite_ok),
        "latency_ms_median": round(1000 * float(np.median(latencies)), 1) if latencies else None,
    }
    if pred is not None and finite_ok:
        err = np.abs(pred - demo)
        metrics["action_mae"] = float(err.mean())
        metrics["action_mae_per_dim"] = err.mean(axis=(0, 1)).round(5).tolist()
        metrics["first_action_mae"] = float(err[:, 0].mean())
    return {"metrics": metrics, "predicted": pred, "demonstrated": demo, "samples": samples}


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if hasattr(tree, "cpu"):
        tree = tree.cpu().numpy()
    return np.asarray(tree)


def closed_loop(policy, spec: TaskSpec, params: VerifyParams, horizon: int) -> dict[str, Any]:
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the envs)

    from tasks.render import gpu_available

    max_steps = params.max_steps or spec.eval_max_steps
    execute = params.execute_steps or max(1, horizon // 2)
    if execute > horizon:
        raise VerifyError(f"execute_steps {execute} exceeds the action horizon {horizon}")
    backend = "gpu" if params.device == "gpu" or (params.device == "auto" and gpu_available()) else "cpu"
    env = gym.make(spec.env_id, obs_mode="rgb", control_mode=spec.control_mode, render_backend=backend,
                   sim_backend="physx_cpu", max_episode_steps=max_steps)
    results, frames = [], []
    try:
        for ep in range(params.episodes):
            seed = EVAL_SEED_BASE + params.seed + ep
            obs, _ = env.reset(seed=seed)
            success, steps, t0 = False, 0, time.monotonic()
            while steps < max_steps and not success:
                o = _to_numpy(obs)
                images = {sensor: o["sensor_data"][sensor]["rgb"][0] for sensor, _ in spec.cameras}
                if ep == 0 and len(frames) < 4:
                    frames.append({"step": steps, "image": next(iter(images.values()))})
                chunk = np.asarray(policy.infer(policy_input(spec, images, spec.assemble_state(o)[0]))["actions"])
                for action in chunk[:execute]:
                    obs, _, terminated, truncated, info = env.step(action[None].astype(np.float32))
                    steps += 1
                    success = bool(np.asarray(_to_numpy(info["success"])).any())
                    if success or bool(np.asarray(_to_numpy(terminated)).any()) or bool(np.asarray(_to_numpy(truncated)).any()) \
                            or steps >= max_steps:
                        break
                if bool(np.asarray(_to_numpy(truncated)).any()):
                    break
            results.append({"seed": seed, "success": success, "steps": steps, "seconds": round(time.monotonic() - t0, 2)})
    finally:
        env.close()
    rate = sum(r["success"] for r in results) / len(results) if results else None
    return {"metrics": {"episodes": len(results), "success_rate": rate, "max_steps": max_steps,
                        "execute_steps": execute, "render_backend": backend}, "episodes": results, "frames": frames}


def verify(params: VerifyParams, root: str, checkpoint: str, holdout: str) -> StageResult:
    params.validate()
    spec = get_spec(params.env_id)
    store = ArtifactStore(root)
    train_manifest, holdout_manifest = store.require(checkpoint), store.require(holdout)
    if train_manifest.stage != "train" or holdout_manifest.stage != "convert":
        raise VerifyError(f"verify needs a train artifact and a convert artifact (held-out demos), got "
                          f"{train_manifest.stage} and {holdout_manifest.stage}")
    for m in (train_manifest, holdout_manifest):
        if m.env_id != params.env_id:
            raise VerifyError(f"{m.uri} belongs to {m.env_id}, not {params.env_id}")
    holdout_is_training_data = holdout in train_manifest.parents

    def build(out: Path) -> dict:
        from tasks import report

        cache = out.parent / "inputs"
        _, train_dir = store.fetch(checkpoint, cache)
        _, holdout_dir = store.fetch(holdout, cache)
        policy, config = load_policy(spec, train_manifest, train_dir / "checkpoint")
        horizon = config.model.action_horizon
        ol = open_loop(policy, spec, holdout_dir, horizon, params.holdout_frames)
        cl = closed_loop(policy, spec, params, horizon) if params.episodes else {"metrics": {"success_rate": None}, "episodes": [], "frames": []}
        m = ol["metrics"]
        checks = {"shape_ok": m["shape_ok"], "finite": m["finite"]}
        if params.max_action_mae:
            checks["action_mae_ok"] = m.get("action_mae", float("inf")) <= params.max_action_mae
        if params.min_success_rate:
            checks["success_rate_ok"] = (cl["metrics"]["success_rate"] or 0.0) >= params.min_success_rate
        metrics = {
            "passed": all(checks.values()), "checks": checks, **m, **cl["metrics"],
            "holdout_is_training_data": holdout_is_training_data,
            "train": {k: train_manifest.metrics.get(k) for k in ("preset", "steps", "final_loss", "batch_size", "init")},
            "lineage": {"checkpoint": checkpoint, "holdout": holdout, "train_parents": list(train_manifest.parents)},
        }
        (out / "metrics.json").write_text(json.dumps({**metrics, "closed_loop_episodes": cl["episodes"]}, indent=2))
        train_log = (train_dir / "train_log.jsonl").read_text().splitlines() if (train_dir / "train_log.jsonl").is_file() else []
        report.write_report(out / "report.html", spec=spec, metrics=metrics, losses=[json.loads(x) for x in train_log],
                            predicted=ol["predicted"], demonstrated=ol["demonstrated"],
                            samples=ol["samples"], rollout_frames=cl["frames"], episodes=cl["episodes"])
        return metrics

    return run_stage(store, env_id=params.env_id, stage=STAGE, code_version=CODE_VERSION,
                     params={**params.key_params(), "spec": spec.digest(STAGE)},
                     parents=[train_manifest, holdout_manifest], build=build, log=common.log)


main = common.cli(__doc__.splitlines()[0], VerifyParams, verify, inputs={"checkpoint": False, "holdout": False})

if __name__ == "__main__":
    raise SystemExit(main())
