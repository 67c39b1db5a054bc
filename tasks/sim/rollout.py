"""Closed-loop rollouts: N ManiSkill envs stepped together, one batched policy call per replanning step.

ManiSkill's CPU simulation holds one env per process, so `EnvWorkers` runs each eval env in a worker
process (spawned: the parent may already hold JAX's threads) and steps them all at once; `LocalEnv` is the
same interface on one env in this process. `run_episodes` keeps every env busy: each env plays an episode
(reset from its seed, then always to its step limit, terminations ignored as ManiSkill evaluates), asks
for a new action chunk when it has executed `execute_steps` actions of the last one, and takes the next
episode when it is done. The envs that need a chunk at the same tick share one policy call
(`BatchedPolicy`: openpi's own input transforms per observation, its jitted `sample_actions` on the
stacked batch, its output transforms per row), so N envs cost one inference, not N.

Which env plays which seed does not change an episode: the same seed and actions give the same episode
in any worker (the harness check's oracle replays show it, and bench/bench_eval.py compares a sequential
client with this one on the same seeds). A sampling policy draws its flow-matching noise per call, so with
a different batching the draws differ: the same protocol and the same measure, not the same sample.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tasks.core.specs import TaskSpec
from tasks.sim.devices import ensure_software_vulkan  # the one home of the lavapipe check (also imported from here)


class RolloutError(RuntimeError):
    """An eval env or worker failed; the message carries the worker's traceback."""


# ---- the env side -----------------------------------------------------------------------------------------------------
def make_eval_env(env_id: str, env_kwargs: dict[str, Any], max_steps: int):
    """The closed-loop env: the render's recorded kwargs, so it renders and observes like the training frames."""
    ensure_software_vulkan(env_kwargs.get("render_backend", "cpu"))
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the envs)

    return gym.make(env_id, max_episode_steps=max_steps, **env_kwargs)


def policy_input(spec: TaskSpec, images: dict[str, np.ndarray], state: np.ndarray) -> dict:
    """What the policy takes, from a dataset frame or a live observation (ManiSkillInputs does the rest)."""
    return {"images": images, "state": np.asarray(state, dtype=np.float32), "prompt": spec.prompt}


def observation_input(spec: TaskSpec, obs: dict) -> dict:
    """A live observation of a single env as the policy's input: the spec's cameras and state, as in the dataset."""
    from mani_skill.utils.common import to_numpy

    o = to_numpy(obs)
    images = {sensor: o["sensor_data"][sensor]["rgb"][0] for sensor, _ in spec.cameras}
    return policy_input(spec, images, spec.assemble_state(o)[0])


class LocalEnv:
    """One eval env in this process, behind the interface `run_episodes` steps."""

    def __init__(self, env, spec: TaskSpec):
        self.env, self.spec, self.size = env, spec, 1
        self.control_mode = getattr(env.unwrapped, "control_mode", None)

    def reset(self, requests: Sequence[tuple[int, int, dict | None]]) -> list[dict]:
        return [
            observation_input(self.spec, self.env.reset(seed=seed, options=options)[0]) for _, seed, options in requests
        ]

    def step(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[tuple[dict, bool]]:
        return [_step(self.env, self.spec, action) for _, action in requests]

    def close(self) -> None:
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _step(env, spec: TaskSpec, action: np.ndarray) -> tuple[dict, bool]:
    from mani_skill.utils.common import to_numpy

    obs, _, _, _, info = env.step(np.asarray(action, np.float32)[None])
    return observation_input(spec, obs), bool(np.asarray(to_numpy(info["success"])).any())


def _worker(conn, env_id: str, env_kwargs: dict, max_steps: int, spec_json: str) -> None:
    """A worker process: one env, commands from the parent until `close`."""
    try:
        spec = TaskSpec.from_json(spec_json)
        env = make_eval_env(env_id, env_kwargs, max_steps)
        conn.send(("ready", None))
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises)
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, arg = conn.recv()
            if command == "close":
                break
            try:
                if command == "reset":
                    seed, options = arg
                    conn.send(("ok", observation_input(spec, env.reset(seed=seed, options=options)[0])))
                else:
                    conn.send(("ok", _step(env, spec, arg)))
            except BaseException:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    finally:
        env.close()


class EnvWorkers:
    """`size` eval envs, one per worker process, stepped in parallel."""

    def __init__(self, size: int, env_id: str, env_kwargs: dict[str, Any], max_steps: int, spec: TaskSpec):
        ensure_software_vulkan(env_kwargs.get("render_backend", "cpu"))  # in the parent: the workers inherit it
        context = multiprocessing.get_context("spawn")
        self.size, self.conns, self.procs = size, [], []
        self.control_mode = env_kwargs.get("control_mode")
        try:
            for _ in range(size):
                parent, child = context.Pipe()
                self.conns.append(parent)
                proc = context.Process(
                    target=_worker, args=(child, env_id, env_kwargs, max_steps, spec.to_json()), daemon=True
                )
                proc.start()
                child.close()  # the worker holds the other end: its death reads as EOF here
                self.procs.append(proc)
            for conn in self.conns:
                self._answer(conn)
        except BaseException:
            self.close()
            raise

    def _answer(self, conn):
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            raise RolloutError("an eval env worker died (killed, or out of memory)") from None
        if status == "error":
            raise RolloutError(f"an eval env worker failed:\n{value}")
        return value

    def _call(self, commands: Sequence[tuple[int, tuple]]) -> list:
        for slot, command in commands:  # all sent first: the workers run while we wait
            try:
                self.conns[slot].send(command)
            except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
                raise RolloutError("an eval env worker died (killed, or out of memory)") from None
        return [self._answer(self.conns[slot]) for slot, _ in commands]

    def reset(self, requests: Sequence[tuple[int, int, dict | None]]) -> list[dict]:
        return self._call([(slot, ("reset", (seed, options))) for slot, seed, options in requests])

    def step(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[tuple[dict, bool]]:
        return self._call([(slot, ("step", np.asarray(action, np.float32))) for slot, action in requests])

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            conn.close()  # a worker still blocked sending an answer nobody reads now fails with a broken pipe, exits
        deadline = time.monotonic() + 30  # one deadline for all: a failed rollout reports in seconds, not minutes
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_envs(size: int, env_id: str, env_kwargs: dict[str, Any], max_steps: int, spec: TaskSpec):
    """`size` eval envs: in this process when 1, else one worker process each."""
    if size <= 1:
        return LocalEnv(make_eval_env(env_id, env_kwargs, max_steps), spec)
    return EnvWorkers(size, env_id, env_kwargs, max_steps, spec)


def auto_env_count(episodes: int, cpus: int | None = None) -> int:
    """Parallel eval envs when not set: one per CPU core, at most 8; one (in this process) below 4 episodes, where
    the workers' start-up (17 s for two on the 2-core CI machine: Python, torch, ManiSkill, the env) outweighs
    what they save."""
    cpus = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    return 1 if episodes < 4 else max(1, min(episodes, 8, cpus))


# ---- the policy side --------------------------------------------------------------------------------------------------
class BatchedPolicy:
    """openpi's `Policy.infer` for several observations at once.

    `Policy.infer` transforms one observation, adds a batch axis of one and calls the jitted `sample_actions`;
    this applies the same input transforms to each observation, stacks them, pads the batch to `size` rows
    (one compiled shape, however many envs ask) and calls `sample_actions` once, then the output transforms
    per row. One observation goes through `Policy.infer` itself.
    """

    def __init__(self, policy, size: int):
        self.policy, self.size = policy, size

    def __call__(self, observations: Sequence[dict]) -> list[np.ndarray]:
        if (len(observations) == 1 and self.size == 1) or getattr(self.policy, "_is_pytorch_model", False):
            # one observation, or openpi's PyTorch model (no JAX rng to split): Policy.infer row by row
            return [np.asarray(self.policy.infer(obs)["actions"]) for obs in observations]
        import jax
        import jax.numpy as jnp
        from openpi.models import model as _model

        p = self.policy
        rows = [p._input_transform(jax.tree.map(lambda x: x, obs)) for obs in observations]
        padded = rows + [rows[-1]] * (max(self.size, len(rows)) - len(rows))
        batch = jax.tree.map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *padded)
        p._rng, rng = jax.random.split(p._rng)
        actions = np.asarray(p._sample_actions(rng, _model.Observation.from_dict(batch), **p._sample_kwargs))
        states = np.asarray(batch["state"])
        return [
            np.asarray(p._output_transform({"state": states[i], "actions": actions[i]})["actions"])
            for i in range(len(rows))
        ]


# ---- the loop ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Episode:
    seed: int
    max_steps: int
    options: dict | None = None  # reset options (a replayed demo's recorded ones)


@dataclasses.dataclass
class _Running:
    index: int
    episode: Episode
    inputs: dict
    t0: float
    steps: int = 0
    first_success: int | None = None
    success: bool = False
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)


ChunkSource = Callable[[list[int], list[dict]], list[np.ndarray]]


def run_episodes(
    envs,
    chunks: ChunkSource,
    spec: TaskSpec,
    episodes: Sequence[Episode],
    execute_steps: int,
    frames: list | None = None,
    on_episode: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Plays `episodes` on `envs`; `chunks(episode indices, inputs)` returns one action chunk per asking episode.

    Returns, per episode in the given order, ManiSkill's `success_once` / `success_at_end`, the first success's
    step, the steps played and the seconds from reset to end. `frames`: the first episode's first four
    observation images (for the report). `on_episode(index, result)`: called as each episode ends (progress logs).
    """
    results: list[dict[str, Any] | None] = [None] * len(episodes)
    queue = collections.deque(enumerate(episodes))
    running: dict[int, _Running] = {}  # env slot -> its episode

    def start(slots: list[int]) -> None:
        picked = [(slot, queue.popleft()) for slot in slots if queue]
        inputs = envs.reset([(slot, ep.seed, ep.options) for slot, (_, ep) in picked])
        for (slot, (index, ep)), obs in zip(picked, inputs):
            running[slot] = _Running(index=index, episode=ep, inputs=obs, t0=time.monotonic())

    start(list(range(min(envs.size, len(episodes)))))
    while running:
        asking = [slot for slot, run in running.items() if not run.pending]
        if asking:
            answers = chunks([running[s].index for s in asking], [running[s].inputs for s in asking])
            for slot, chunk in zip(asking, answers):
                run, chunk = running[slot], np.asarray(chunk)
                if chunk.ndim != 2 or len(chunk) == 0 or chunk.shape[1] != spec.action_dim:
                    raise ValueError(
                        f"the policy returned actions of shape {chunk.shape} at step {run.steps}; "
                        f"expected (horizon, {spec.action_dim})"
                    )
                if frames is not None and run.index == 0 and len(frames) < 4:
                    frames.append({"step": run.steps, "image": next(iter(run.inputs["images"].values()))})
                run.pending.extend(chunk[:execute_steps])
        slots = list(running)
        stepped = envs.step([(slot, running[slot].pending.popleft()) for slot in slots])
        finished = []
        for slot, (obs, success) in zip(slots, stepped):
            run = running[slot]
            run.inputs, run.success, run.steps = obs, success, run.steps + 1
            if success and run.first_success is None:
                run.first_success = run.steps
            if run.steps >= run.episode.max_steps:
                results[run.index] = {
                    "seed": int(run.episode.seed),
                    "success_once": run.first_success is not None,
                    "success_at_end": run.success,
                    "steps_to_success": run.first_success,
                    "steps": run.steps,
                    "seconds": round(time.monotonic() - run.t0, 2),
                }
                if on_episode is not None:
                    on_episode(run.index, results[run.index])
                finished.append(slot)
        for slot in finished:
            del running[slot]
        if finished:
            start(finished)
    return results  # type: ignore[return-value]
