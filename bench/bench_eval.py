"""P7: closed-loop evaluation, our batched rollouts vs a sequential client in the style of openpi's LIBERO example.

openpi's `examples/libero/main.py` plays one episode at a time in one env: reset, then per step pop an action
from the plan, and when the plan is empty ask the policy for a chunk (one observation, one inference) and
keep `replan_steps` of it. Ours (tasks/sim/rollout.py, what verify runs) steps `envs` envs in worker processes
together and asks the policy once per tick for all envs that need a chunk.

Two policies, the same seeds on both sides, in one run:
- the oracle (each of the first `episodes` demos' own actions from its own seed): both sides must give the same
  per-episode outcomes, step for step, or the benchmark fails;
- a tiny pi0 checkpoint of the bench store (bench_train's, or one trained here for one step; its success
  means nothing, its cost is real inference), on evaluation seeds, to the same step limit.
Episodes per minute are timed after the envs exist (our workers' start-up is printed beside them).
Goal: >= 2x with the trained policy. Usage: python -m bench.bench_eval [demos] [episodes] [envs] [max_steps]
"""

from __future__ import annotations

import collections
import sys
import time

from bench.common import ENV_ID, OUT, report

HORIZON, EXECUTE = 10, 5


def sequential_client(env, spec, policy_for, episodes) -> list[dict]:
    """openpi's LIBERO example loop: one env, one episode at a time, one inference per replan."""
    import numpy as np
    from mani_skill.utils.common import to_numpy

    from tasks.sim.rollout import observation_input

    results = []
    for index, (seed, max_steps, options) in enumerate(episodes):
        policy = policy_for(index)
        obs, _ = env.reset(seed=seed, options=options)
        plan, first, success = collections.deque(), None, False
        for t in range(max_steps):
            if not plan:
                plan.extend(np.asarray(policy.infer(observation_input(spec, obs))["actions"])[:EXECUTE])
            obs, _, _, _, info = env.step(np.asarray(plan.popleft(), np.float32)[None])
            success = bool(np.asarray(to_numpy(info["success"])).any())
            if success and first is None:
                first = t + 1
        results.append(
            {
                "seed": seed,
                "success_once": first is not None,
                "success_at_end": success,
                "steps_to_success": first,
                "steps": max_steps,
            }
        )
    return results


def main(argv: list[str]) -> int:
    demo_count = int(argv[0]) if argv else 8
    episodes = int(argv[1]) if len(argv) > 1 else 8
    n_envs = int(argv[2]) if len(argv) > 2 else 2
    max_steps = int(argv[3]) if len(argv) > 3 else 50
    from bench.bench_train import prepared_inputs
    from tasks.core.checkpoints import fetch_checkpoint
    from tasks.core.specs import get_spec
    from tasks.core.store import ArtifactStore
    from tasks.policy.loading import load_policy
    from tasks.sim.rollout import (
        BatchedPolicy,
        EnvWorkers,
        Episode,
        make_eval_env,
        observation_input,
        policy_input,
        run_episodes,
    )
    from tasks.train import TrainParams, train
    from tasks.verify import EVAL_SEED_BASE, DemoReplayPolicy, eval_env_kwargs, holdout_demo_actions, read_sources

    spec = get_spec(ENV_ID)
    root, dataset, norm = prepared_inputs(demo_count)
    store = ArtifactStore(root)
    manifest = store.require(dataset.uri)
    sources = read_sources(store, manifest, manifest)
    _, dataset_dir = store.fetch(dataset.uri, OUT / "eval-inputs")
    demo_actions = holdout_demo_actions(dataset_dir, sources)
    kwargs = eval_env_kwargs(sources, "auto")
    limit = max(max_steps, *(len(a) for a in demo_actions))
    checkpoint = (
        tiny_checkpoint(store, root)
        or train(
            TrainParams(env_id=ENV_ID, steps=1, action_horizon=HORIZON), root=root, dataset=dataset.uri, stats=norm.uri
        ).uri
    )
    train_manifest, ckpt = fetch_checkpoint(store, checkpoint, OUT / "eval-ckpt")
    policy, _ = load_policy(spec, train_manifest, ckpt)

    demos = [(ep["seed"], len(a), ep["options"]) for ep, a in zip(sources.holdout_episodes, demo_actions)][:episodes]
    oracle_for = lambda i: DemoReplayPolicy(demo_actions[i], HORIZON, EXECUTE)  # noqa: E731
    evals = [(EVAL_SEED_BASE + i, max_steps, None) for i in range(episodes)]

    env = make_eval_env(ENV_ID, kwargs, limit)
    try:
        t0 = time.monotonic()
        seq_oracle = sequential_client(env, spec, oracle_for, demos)
        seq_oracle_s = time.monotonic() - t0
        policy.infer(observation_input(spec, env.reset(seed=0)[0]))  # jit compilation, not timed
        t0 = time.monotonic()
        sequential_client(env, spec, lambda i: policy, evals)
        seq_policy_s = time.monotonic() - t0
    finally:
        env.close()

    t0 = time.monotonic()
    workers = EnvWorkers(n_envs, ENV_ID, kwargs, limit, spec)
    startup_s = time.monotonic() - t0
    try:
        oracles = [oracle_for(i) for i in range(len(demos))]
        t0 = time.monotonic()
        ours_oracle = run_episodes(
            workers,
            lambda idx, xs: [oracles[i].infer(x)["actions"] for i, x in zip(idx, xs)],
            spec,
            [Episode(s, n, o) for s, n, o in demos],
            EXECUTE,
        )
        ours_oracle_s = time.monotonic() - t0
        batched = BatchedPolicy(policy, workers.size)
        batched([policy_input(spec, *_probe(spec))])  # jit compilation at the padded batch size, not timed
        t0 = time.monotonic()
        run_episodes(workers, lambda _, xs: batched(xs), spec, [Episode(s, n, o) for s, n, o in evals], EXECUTE)
        ours_policy_s = time.monotonic() - t0
    finally:
        workers.close()

    key = lambda rs: [(r["seed"], r["success_once"], r["success_at_end"], r["steps_to_success"]) for r in rs]  # noqa: E731
    if key(ours_oracle) != key(seq_oracle):
        print(f"oracle outcomes differ:\n  sequential {key(seq_oracle)}\n  batched    {key(ours_oracle)}")
        return 1
    per_min = lambda n, s: 60 * n / s  # noqa: E731
    rows = [
        ("oracle replays, outcomes equal", len(demos), "episodes"),
        ("oracle: sequential client", per_min(len(demos), seq_oracle_s), "episodes/min"),
        (f"oracle: ours, {n_envs} envs", per_min(len(demos), ours_oracle_s), "episodes/min"),
        (f"tiny pi0, {max_steps} steps: sequential client", per_min(episodes, seq_policy_s), "episodes/min"),
        (f"tiny pi0, {max_steps} steps: ours, {n_envs} envs", per_min(episodes, ours_policy_s), "episodes/min"),
        (f"our {n_envs} workers' start-up (once per verify)", startup_s, "s"),
    ]
    report("P7 closed-loop evaluation", rows, ratio=seq_policy_s / ours_policy_s, goal=2.0)
    return 0


def tiny_checkpoint(store, root: str) -> str | None:
    """A tiny pi0 train artifact already in the bench store (bench_train leaves one), if any."""
    for name in store.children(f"{root}/{ENV_ID}/train"):
        manifest = store.read_manifest(f"{root}/{ENV_ID}/train/{name.rstrip('/').rsplit('/', 1)[-1]}")
        if (
            manifest is not None
            and manifest.params.get("preset") == "tiny"
            and manifest.params.get("model", "pi0") == "pi0"
            and manifest.params.get("action_horizon") == HORIZON
        ):
            return manifest.uri
    return None


def _probe(spec):
    """A blank observation of the task's shape (for compiling the batched policy before timing)."""
    import numpy as np

    images = {sensor: np.zeros((128, 128, 3), np.uint8) for sensor, _ in spec.cameras}
    return images, np.zeros(spec.state_dim, np.float32)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
