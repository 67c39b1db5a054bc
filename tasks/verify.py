"""verify: load a trained checkpoint the way users serve it, and measure it on held-out data and in the sim.

1. `policy_config.create_trained_policy` loads the checkpoint (what openpi's policy server does), with
   the same TrainConfig the train stage used (tasks/policy/configs.py).
2. Open-loop, on held-out real frames: a dataset converted from demos that training never saw (the
   pipeline makes it from a disjoint seed range). For evenly spaced frames, the predicted action chunk is
   compared with the demonstrated one: shape `(action_horizon, action_dim)`, finiteness, error per
   dimension, inference latency.
3. The evaluation protocol, read from the artifacts' lineage: the closed-loop env is built from the
   held-out render artifact's recorded env kwargs (shader and sensor configs, sim and render backend,
   control mode), so it renders exactly like the training frames; the seeds are checked disjoint from every
   demo's seed; the step limit defaults to the longest training episode (after control-mode conversion)
   plus 15 % headroom.
4. The harness check: an oracle policy behind the same policy interface replays each held-out demo's
   converted actions (from the dataset) from that demo's own seed. It must succeed at least as often as the
   render stage's replay did, otherwise the harness, not the policy, is wrong and the stage fails.
5. Closed-loop: the policy drives ManiSkill for `episodes` seeded episodes, executing `execute_steps` actions
   of each predicted chunk before replanning, always to the step limit (ManiSkill's protocol: terminations
   ignored), reporting `success_once`, `success_at_end`, steps to first success and a 95 % Wilson interval.
6. `metrics.json` and a self-contained `report.html` (camera frames, loss curves, predicted vs demonstrated
   actions per dimension, metrics table, lineage).

The verdict is `failed` when a check fails (shape, finiteness, harness, a threshold), `unchecked` when no
threshold applies to what was measured, `passed` only when the thresholds set were met. The promote stage
reads it together with the recorded protocol.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import cli
from tasks.core.params import VerifyParams
from tasks.core.specs import TaskSpec, get_spec
from tasks.core.stage import StageResult, require, run_stage
from tasks.core.store import ArtifactStore, Manifest
from tasks.policy.loading import load_policy
from tasks.sim.rollout import BatchedPolicy, Episode, auto_env_count, open_envs, policy_input, run_episodes

log = logging.getLogger(__name__)

STAGE = "verify"
CODE_VERSION = (
    "4"  # 4: which kept checkpoint (step, its validation loss); 3: eval env from the render's env kwargs, ...
)
EVAL_SEED_BASE = 1_000_000  # closed-loop seeds start here; demos are generated from small seeds (checked, not assumed)
STEP_LIMIT_HEADROOM = 0.15  # over the longest training episode, as openpi's LIBERO example keeps


class VerifyError(ValueError):
    """The checkpoint or the held-out data cannot be verified; the message names the fix."""


class HarnessError(VerifyError):
    """The evaluation harness cannot reproduce the demonstrations: its figures would not measure the policy."""


# ---- the evaluation protocol ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """Everything that decides what a success rate means. Two results compare only under equal protocols."""

    env_id: str
    env_kwargs: dict[str, Any]  # gym.make kwargs: obs/control mode, sensor and shader configs, sim and render backend
    seed_start: int
    episodes: int
    max_steps: int
    execute_steps: int  # replan interval

    @property
    def seeds(self) -> range:
        return range(self.seed_start, self.seed_start + self.episodes)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))


@dataclasses.dataclass(frozen=True)
class EvalSources:
    """What verify reads from the lineage of its inputs (render and demo artifacts), besides the datasets."""

    env_kwargs: dict[str, Any]  # the held-out render's (= the training renders', checked)
    holdout_render_success_ratio: float  # replay success of the held-out shard(s), failed replays included
    # {"seed", "options", "length", "success"} per held-out dataset episode, in dataset order; "success" is the
    # render's replay outcome, so the oracle's bar is at least holdout_render_success_ratio (only successes are kept)
    holdout_episodes: tuple[dict[str, Any], ...]
    demo_seeds: frozenset[int]  # every episode seed of every demo set behind training and the held-out data
    longest_training_episode: int  # steps, after control-mode conversion


def _parents(store: ArtifactStore, manifest: Manifest, stage: str) -> list[Manifest]:
    return [m for m in (store.require(uri) for uri in manifest.parents) if m.stage == stage]


def _trajectory_meta(store: ArtifactStore, manifest: Manifest) -> dict[str, Any]:
    meta = store.read_json(f"{store.files_uri(manifest)}/trajectory.json")
    if not isinstance(meta, dict) or "episodes" not in meta or "env_info" not in meta:
        raise VerifyError(
            f"{manifest.uri} has no readable trajectory.json: delete it and rerun the {manifest.stage} stage"
        )
    return meta


def _episode_seeds(episode: dict[str, Any]) -> list[int]:
    seed = (episode.get("reset_kwargs") or {}).get("seed", episode.get("episode_seed"))
    if seed is None:
        return []
    return [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]


def training_dataset(store: ArtifactStore, train_manifest: Manifest) -> Manifest:
    """The dataset a checkpoint was trained on: the train artifact's first parent (the held-out dataset, when
    training computed a validation loss, is a later parent)."""
    dataset = store.require(train_manifest.parents[0]) if train_manifest.parents else None
    if dataset is None or dataset.stage != "convert":
        raise VerifyError(f"{train_manifest.uri} does not name its training dataset as its first parent: retrain it")
    return dataset


def read_sources(store: ArtifactStore, train_dataset: Manifest, holdout_manifest: Manifest) -> EvalSources:
    """The protocol's inputs from the lineage of the training dataset and the held-out dataset (convert artifacts)."""
    holdout_renders = _parents(store, holdout_manifest, "render")
    train_renders = _parents(store, train_dataset, "render")
    if not holdout_renders or not train_renders:
        raise VerifyError(
            f"cannot trace the render artifacts behind {holdout_manifest.uri} and {train_dataset.uri}: "
            "verify needs the pipeline's lineage (convert <- render <- download)"
        )
    holdout_meta = [_trajectory_meta(store, r) for r in holdout_renders]
    train_meta = [_trajectory_meta(store, r) for r in train_renders]
    env_kwargs = dict(holdout_meta[0]["env_info"]["env_kwargs"])

    def comparable(kwargs):  # placement, not content: CPU and GPU rendering of the training frames may mix
        return {k: v for k, v in kwargs.items() if k != "render_backend"}

    for render, meta in zip(holdout_renders + train_renders, holdout_meta + train_meta):
        if comparable(meta["env_info"]["env_kwargs"]) != comparable(env_kwargs):
            raise VerifyError(
                f"{render.uri} was rendered with env kwargs {meta['env_info']['env_kwargs']}, the held-out "
                f"data with {env_kwargs}: training and evaluation frames would differ; rerun render for both"
            )
    # Convert writes the episodes of its inputs in order, so dataset episode i is the i-th replayed episode here.
    holdout_episodes = []
    for render, meta in zip(holdout_renders, holdout_meta):
        for ep in meta["episodes"]:
            seeds = _episode_seeds(ep)
            if len(seeds) != 1:
                raise VerifyError(
                    f"{render.uri}: held-out episode {ep.get('episode_id')} records {seeds or 'no'} seed(s), "
                    "so the oracle cannot replay it from its own start: re-render demos that record one "
                    "reset seed per episode"
                )
            holdout_episodes.append(
                {
                    "seed": seeds[0],
                    "options": (ep.get("reset_kwargs") or {}).get("options"),
                    "length": int(ep["elapsed_steps"]),
                    "success": bool(ep.get("success", True)),
                }
            )
    demo_seeds: set[int] = set()
    demo_sets = {d.uri: d for render in holdout_renders + train_renders for d in _parents(store, render, "download")}
    for demos in demo_sets.values():
        for ep in _trajectory_meta(store, demos)["episodes"]:
            seeds = _episode_seeds(ep)
            if not seeds:
                raise VerifyError(
                    f"{demos.uri}: episode {ep.get('episode_id')} records no seed (reset_kwargs.seed or "
                    "episode_seed), so evaluation seeds cannot be checked disjoint from the demos: use "
                    "demos whose trajectory.json records seeds"
                )
            demo_seeds.update(seeds)
    replayed = sum(r.metrics.get("successes", 0) for r in holdout_renders)
    ratio = replayed / max(1, sum(r.metrics.get("episodes", 0) for r in holdout_renders))
    longest = max(int(ep["elapsed_steps"]) for meta in train_meta for ep in meta["episodes"])
    return EvalSources(
        env_kwargs=env_kwargs,
        holdout_render_success_ratio=ratio,
        holdout_episodes=tuple(holdout_episodes),
        demo_seeds=frozenset(demo_seeds),
        longest_training_episode=longest,
    )


def default_step_limit(longest_training_episode: int) -> int:
    return math.ceil(longest_training_episode * (1 + STEP_LIMIT_HEADROOM))


def check_seeds_disjoint(seeds: range, demo_seeds: frozenset[int]) -> None:
    overlap = sorted(set(seeds) & demo_seeds)
    if overlap:
        raise VerifyError(
            f"evaluation seeds {seeds.start}..{seeds.stop - 1} overlap the demo set's episode seeds "
            f"({len(overlap)} shared, e.g. {overlap[:5]}): the policy would be scored on scenes it was "
            "trained on. Pick another evaluation seed (verify's seed / the run's seed setting)"
        )


def eval_env_kwargs(sources: EvalSources, device: str) -> dict[str, Any]:
    kwargs = dict(sources.env_kwargs)
    if device != "auto":
        kwargs["render_backend"] = device
    kwargs.setdefault("render_backend", "cpu")
    kwargs["num_envs"] = 1
    return kwargs


def protocol_for(params: VerifyParams, sources: EvalSources, horizon: int) -> EvalProtocol:
    execute = params.execute_steps or max(1, horizon // 2)
    if execute > horizon:
        raise VerifyError(f"execute_steps {execute} exceeds the action horizon {horizon}")
    return EvalProtocol(
        env_id=params.env_id,
        env_kwargs=eval_env_kwargs(sources, params.device),
        seed_start=EVAL_SEED_BASE + params.seed,
        episodes=params.episodes,
        max_steps=params.max_steps or default_step_limit(sources.longest_training_episode),
        execute_steps=execute,
    )


# ---- statistics -----------------------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """[low, high] (a list: it travels through XCom and JSON as it is)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """ManiSkill's episode metrics over a set of episodes: success_once (the success rate) and success_at_end."""
    n = len(episodes)
    once = sum(e["success_once"] for e in episodes)
    at_end = sum(e["success_at_end"] for e in episodes)
    to_success = [e["steps_to_success"] for e in episodes if e["steps_to_success"] is not None]
    return {
        "episodes": n,
        "successes": once,
        "success_rate": once / n if n else None,  # success_once's rate
        "success_at_end_rate": at_end / n if n else None,
        "success_rate_ci95": wilson_interval(once, n),
        "median_steps_to_success": float(np.median(to_success)) if to_success else None,
        "mean_episode_steps": float(np.mean([e["steps"] for e in episodes])) if n else None,
    }


# ---- the policies -----------------------------------------------------------------------------------------------------
class DemoReplayPolicy:
    """The oracle: answers each call with the next chunk of a demonstration's actions, ignoring the observation.

    Replayed from the demo's own seed through the same harness as the trained policy, it succeeds exactly when
    the harness (env kwargs, control mode, action layout, chunking) reproduces the training data's world.
    """

    def __init__(self, actions: np.ndarray, horizon: int, execute_steps: int):
        self.actions, self.horizon, self.execute, self.cursor = (
            np.asarray(actions, np.float32),
            horizon,
            execute_steps,
            0,
        )

    def infer(self, obs: dict) -> dict:
        chunk = self.actions[self.cursor : self.cursor + self.horizon]
        self.cursor += self.execute
        return {"actions": chunk}


class EpisodeProgress:
    """Logs each closed-loop episode as it ends: its seed and outcome, the running success rate and an ETA."""

    def __init__(self, total: int, t0: float):
        self.total, self.t0, self.done, self.successes = total, t0, 0, 0

    def __call__(self, index: int, episode: dict[str, Any]) -> None:
        self.done += 1
        self.successes += bool(episode["success_once"])
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        outcome = f"success at step {episode['steps_to_success']}" if episode["success_once"] else "no success"
        log.info(
            f"[verify] episode {self.done}/{self.total} (seed {episode['seed']}): {outcome}, {episode['steps']} steps; "
            f"success so far {self.successes}/{self.done} ({self.successes / self.done:.0%}); ETA {eta:.0f} s"
        )


# ---- the harness ------------------------------------------------------------------------------------------------------
def holdout_demo_actions(holdout_dir: Path, sources: EvalSources) -> list[np.ndarray]:
    """Each held-out dataset episode's actions (what the policy was taught to output), checked against the render."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.core.dataset import ACTION_KEY

    ds = LeRobotDataset("maniskill/holdout", root=holdout_dir)
    starts, stops = ds.episode_data_index["from"].tolist(), ds.episode_data_index["to"].tolist()
    lengths = [b - a for a, b in zip(starts, stops)]
    expected = [e["length"] for e in sources.holdout_episodes]
    if lengths != expected:
        raise VerifyError(
            f"{holdout_dir}: the held-out dataset's episode lengths {lengths} are not those of its render "
            f"artifact {expected}: reconvert the held-out shard"
        )
    column = ds.hf_dataset.with_format("numpy")[ACTION_KEY]
    return [np.asarray(column[a:b], dtype=np.float32) for a, b in zip(starts, stops)]


def harness_check(
    spec: TaskSpec,
    envs,
    sources: EvalSources,
    demo_actions: list[np.ndarray],
    horizon: int,
    execute_steps: int,
    limit: int = 0,
) -> dict[str, Any]:
    """Runs the oracle on held-out demos (on `envs`, tasks.sim.rollout's) and refuses a harness that cannot reproduce them."""
    picked = list(zip(sources.holdout_episodes, demo_actions))[: limit or None]
    oracles = [DemoReplayPolicy(actions, horizon, execute_steps) for _, actions in picked]
    episodes = run_episodes(
        envs,
        lambda indices, inputs: [oracles[i].infer(x)["actions"] for i, x in zip(indices, inputs)],
        spec,
        [Episode(ep["seed"], len(actions), ep["options"]) for ep, actions in picked],
        execute_steps,
    )
    summary = summarize(episodes)
    # The bar: each replayed demo must end as it ended in the render's replay (the render kept only successful
    # replays, so this is at least the render's replay success ratio). Replaying the same actions from the same
    # seed on the CPU physics is deterministic, so anything less means the harness changed the world.
    rate = summary["success_at_end_rate"]
    bar = sum(ep["success"] for ep, _ in picked) / len(picked)
    result = {
        **summary,
        "bar": bar,
        "render_success_ratio": round(sources.holdout_render_success_ratio, 4),
        "ok": rate >= bar,
        "per_episode": episodes,
    }
    if not result["ok"]:
        failed = [e["seed"] for (ep, _), e in zip(picked, episodes) if ep["success"] and not e["success_at_end"]]
        raise HarnessError(
            f"harness check failed: replaying the held-out demos' own actions from their own seeds succeeded in "
            f"{rate:.0%} of {len(episodes)} episodes (seeds failing: {failed[:10]}), where the render stage's replay of "
            f"the same demos succeeded in {bar:.0%}. The evaluation harness, not the policy, is "
            f"wrong: its env (control mode {envs.control_mode!r}, kwargs recorded in the "
            "protocol) does not reproduce the training data's world (control mode, sim backend, action layout); no "
            "success rate measured with it would mean anything"
        )
    return result


def verdict_of(checks: dict[str, bool], thresholds: list[str], episodes: int) -> tuple[str, str]:
    """`failed` if a check failed; `unchecked` if no threshold covers the figures measured; else `passed`."""
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        return "failed", f"failed: {', '.join(failed)}"
    if episodes and "success_rate_ok" not in thresholds:
        return "unchecked", (
            "unchecked: no min_success_rate set, so the closed-loop success rate is reported but not judged"
        )
    if not thresholds:
        return "unchecked", "unchecked: no thresholds set"
    return "passed", f"passed: {', '.join(thresholds)}"


# ---- open-loop --------------------------------------------------------------------------------------------------------
def open_loop(policy, spec: TaskSpec, holdout_dir: Path, horizon: int, n_frames: int) -> dict[str, Any]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.core.dataset import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY
    from tasks.policy.transforms import to_hwc_uint8

    ds = LeRobotDataset(
        "maniskill/holdout", root=holdout_dir, delta_timestamps={ACTION_KEY: [t / spec.fps for t in range(horizon)]}
    )
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
            samples.append({"frame": int(idx), "image": to_hwc_uint8(next(iter(images.values())))})
    pred = np.stack(predicted) if shapes_ok else None
    demo = np.stack(demonstrated)
    metrics: dict[str, Any] = {
        "holdout_frames": len(indices),
        "output_shape": list(predicted[0].shape),
        "shape_ok": bool(shapes_ok),
        "finite": bool(finite_ok),
        "latency_ms_median": round(1000 * float(np.median(latencies)), 1) if latencies else None,
    }
    if pred is not None and finite_ok:
        err = np.abs(pred - demo)
        metrics["action_mae"] = float(err.mean())
        metrics["action_mae_per_dim"] = err.mean(axis=(0, 1)).round(5).tolist()
        metrics["first_action_mae"] = float(err[:, 0].mean())
    return {"metrics": metrics, "predicted": pred, "demonstrated": demo, "samples": samples}


# ---- the stage --------------------------------------------------------------------------------------------------------
def verify(params: VerifyParams, root: str, checkpoint: str, holdout: str) -> StageResult:
    params.validate()
    spec = get_spec(params.env_id)
    store = ArtifactStore(root)
    train_manifest = require(
        store, checkpoint.rpartition("@")[0] or checkpoint, stage="train", env_id=params.env_id, what="checkpoint"
    )
    holdout_manifest = require(store, holdout, stage="convert", env_id=params.env_id, what="holdout")
    from tasks.core.checkpoints import (
        checkpoint_dir_name,
        checkpoint_files,
        checkpoint_ref,
        final_step,
        split_checkpoint_ref,
    )

    uri, ref_step = split_checkpoint_ref(checkpoint)
    if ref_step and params.step and ref_step != params.step:
        raise VerifyError(f"checkpoint {checkpoint} names step {ref_step} but step={params.step} was asked for")
    step = ref_step or params.step
    step = 0 if step == final_step(train_manifest) else step  # the final checkpoint is the artifact itself
    folder = checkpoint_dir_name(train_manifest, step)  # refuses a step the artifact did not keep
    params = dataclasses.replace(params, step=step)
    checkpoint = uri
    train_dataset = training_dataset(store, train_manifest)
    holdout_is_training_data = train_dataset.uri == holdout
    # Refusals before any compute: the protocol is fixed by the params and the lineage alone.
    sources = read_sources(store, train_dataset, holdout_manifest)
    protocol = protocol_for(params, sources, int(train_manifest.params["action_horizon"]))
    if params.episodes:
        check_seeds_disjoint(protocol.seeds, sources.demo_seeds)

    def build(out: Path) -> dict:
        cache = out.parent / "inputs"
        _, train_dir = store.fetch(checkpoint, cache, only=checkpoint_files(folder))
        _, holdout_dir = store.fetch(holdout, cache)
        evaluation = evaluate(spec, params, protocol, sources, train_manifest, train_dir / folder, holdout_dir)
        metrics = verification_metrics(params, evaluation, protocol, sources, train_manifest)
        metrics["holdout_is_training_data"] = holdout_is_training_data
        metrics["lineage"] = {
            "checkpoint": checkpoint,
            "step": step or None,
            "checkpoint_ref": checkpoint_ref(checkpoint, step),
            "holdout": holdout,
            "train_parents": list(train_manifest.parents),
        }
        metrics["checkpoint_step"] = step or final_step(train_manifest)
        metrics["val_loss_at_step"] = val_loss_at(train_dir / "train_log.jsonl", metrics["checkpoint_step"])
        write_outputs(out, spec, metrics, evaluation, train_dir / "train_log.jsonl")
        log.info(f"[verify] verification {metrics['verdict'].upper()}: {metrics['verdict_reason']}")
        return metrics

    key = {
        **params.key_params(),
        "render_backend": protocol.env_kwargs.get("render_backend"),
        "spec": spec.digest(STAGE),
    }
    return run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params=key,
        parents=[train_manifest, holdout_manifest],
        build=build,
    )


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` measured: the harness check, the open-loop figures, the closed-loop episodes."""

    open_loop: dict[str, Any]  # `open_loop`'s result: metrics, predicted and demonstrated chunks, sample frames
    harness: dict[str, Any] | None = None  # the oracle's replay of the held-out demos (None: not run)
    episodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # closed-loop, in seed order
    rollout_frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the first episode's first frames
    envs: int = 0  # closed-loop envs stepped together
    rollout_s: float = 0.0


def evaluate(
    spec, params: VerifyParams, protocol, sources, train_manifest: Manifest, checkpoint_dir: Path, holdout_dir: Path
) -> Evaluation:
    """The harness check (the oracle first: a broken harness makes the rest meaningless), then the policy open loop
    on held-out frames and closed loop on the protocol's seeds, in envs opened once for both."""
    horizon = int(train_manifest.params["action_horizon"])
    envs, demo_actions = None, []
    n_envs = min(params.envs or auto_env_count(params.episodes), max(params.episodes, 1))
    if params.episodes:
        demo_actions = holdout_demo_actions(holdout_dir, sources)
        longest_oracle = max(len(a) for a in demo_actions)
        envs = open_envs(n_envs, spec.env_id, protocol.env_kwargs, max(protocol.max_steps, longest_oracle), spec)
    try:
        harness = None
        if envs is not None and params.harness:
            harness = harness_check(
                spec, envs, sources, demo_actions, horizon, protocol.execute_steps, params.oracle_episodes
            )
            log.info(
                f"[verify] harness check: the oracle replayed {harness['episodes']} held-out demos, "
                f"{harness['success_at_end_rate']:.0%} succeeded (bar {harness['bar']:.0%})"
            )
        policy, _ = load_policy(spec, train_manifest, checkpoint_dir)
        evaluation = Evaluation(
            open_loop(policy, spec, holdout_dir, horizon, params.holdout_frames), harness, envs=n_envs
        )
        if envs is not None:
            batched = BatchedPolicy(policy, envs.size)
            t0 = time.monotonic()
            evaluation.episodes = run_episodes(
                envs,
                lambda _, inputs: batched(inputs),
                spec,
                [Episode(seed, protocol.max_steps) for seed in protocol.seeds],
                protocol.execute_steps,
                evaluation.rollout_frames,
                on_episode=EpisodeProgress(params.episodes, t0),
            )
            evaluation.rollout_s = time.monotonic() - t0
            log.info(
                f"[verify] {len(evaluation.episodes)} closed-loop episodes on {envs.size} env(s) in "
                f"{evaluation.rollout_s:.0f} s"
            )
    finally:
        if envs is not None:
            envs.close()
    return evaluation


def judge(params: VerifyParams, open_loop_metrics: dict, closed: dict, harness: dict | None) -> dict[str, Any]:
    """The checks, which of them are thresholds the run set, and the verdict they give, with its reason."""
    checks = {"shape_ok": open_loop_metrics["shape_ok"], "finite": open_loop_metrics["finite"]}
    thresholds = []
    if harness is not None:
        checks["harness_ok"] = harness["ok"]
    if params.max_action_mae:
        checks["action_mae_ok"] = open_loop_metrics.get("action_mae", float("inf")) <= params.max_action_mae
        thresholds.append("action_mae_ok")
    if params.min_success_rate and params.episodes:
        checks["success_rate_ok"] = (closed["success_rate"] or 0.0) >= params.min_success_rate
        thresholds.append("success_rate_ok")
    verdict, reason = verdict_of(checks, thresholds, params.episodes)
    return {
        "verdict": verdict,
        "verdict_reason": reason,
        "checks": checks,
        "thresholds": {
            "max_action_mae": params.max_action_mae or None,
            "min_success_rate": params.min_success_rate or None,
        },
    }


# The training figures a verification carries (and its report shows) beside its own.
TRAIN_FIGURES = (
    "model",
    "preset",
    "normalization",
    "steps",
    "steps_source",
    "epochs",
    "final_loss",
    "val_loss_final",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "decay_steps",
    "vision_tower",
    "init",
    "weights_loaded",
)


def verification_metrics(
    params: VerifyParams, evaluation: Evaluation, protocol, sources, train_manifest: Manifest
) -> dict[str, Any]:
    """The verification's metrics: verdict, open-loop and closed-loop figures, protocol, harness, training."""
    closed = summarize(evaluation.episodes)
    harness = evaluation.harness
    return {
        **judge(params, evaluation.open_loop["metrics"], closed, harness),
        **evaluation.open_loop["metrics"],
        **closed,
        "eval_envs": evaluation.envs if params.episodes else 0,
        "closed_loop_seconds": round(evaluation.rollout_s, 2),
        "episodes_per_minute": round(60 * len(evaluation.episodes) / evaluation.rollout_s, 2)
        if evaluation.rollout_s
        else None,
        "protocol": protocol.to_dict(),
        "harness": {k: v for k, v in (harness or {}).items() if k != "per_episode"} or None,
        "longest_training_episode": sources.longest_training_episode,
        "train": {k: train_manifest.metrics.get(k) for k in TRAIN_FIGURES},
    }


def write_outputs(out: Path, spec, metrics: dict, evaluation: Evaluation, train_log: Path) -> None:
    """metrics.json (with every episode) and report.html (frames, loss curves, actions, episodes, lineage)."""
    from tasks.core import report

    harness_episodes = (evaluation.harness or {}).get("per_episode", [])
    (out / "metrics.json").write_text(
        json.dumps(
            {**metrics, "closed_loop_episodes": evaluation.episodes, "harness_episodes": harness_episodes}, indent=2
        )
    )
    lines = train_log.read_text().splitlines() if train_log.is_file() else []
    report.write_report(
        out / "report.html",
        spec=spec,
        metrics=metrics,
        losses=[json.loads(x) for x in lines],
        predicted=evaluation.open_loop["predicted"],
        demonstrated=evaluation.open_loop["demonstrated"],
        samples=evaluation.open_loop["samples"],
        rollout_frames=evaluation.rollout_frames,
        episodes=evaluation.episodes,
        harness_episodes=harness_episodes,
    )


def val_loss_at(train_log: Path, step: int) -> float | None:
    """The held-out validation loss training logged at `step` (None when none was logged there)."""
    if not train_log.is_file():
        return None
    for line in train_log.read_text().splitlines():
        record = json.loads(line)
        if record.get("step") == step and "val_loss" in record:
            return float(record["val_loss"])
    return None


def verdict_line(metrics: dict[str, Any]) -> str:
    """The verdict in words, for consoles and logs: never 'PASSED' unless thresholds were set and met."""
    verdict = metrics.get("verdict") or "unchecked"
    n, k, ci = metrics.get("episodes"), metrics.get("successes"), metrics.get("success_rate_ci95")
    closed = (
        f"closed-loop success {k}/{n} ({metrics.get('success_rate'):.0%}, 95 % CI {ci[0]:.0%}-{ci[1]:.0%})"
        if n
        else "no closed-loop episodes"
    )
    return f"verification {verdict.upper()} ({metrics.get('verdict_reason', '')}); {closed}"


main = cli.cli(__doc__, VerifyParams, verify, inputs={"checkpoint": False, "holdout": False})

if __name__ == "__main__":
    raise SystemExit(main())
