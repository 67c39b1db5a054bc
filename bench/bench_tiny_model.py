"""T1: the tiny preset's vision tower against openpi's own (So400m/14), on one training step and one inference.

    python -m bench.bench_tiny_model [batch] [steps] [variant ...]

For each SigLIP variant (default: openpi's So400m/14 frozen, as the tiny preset used it, then mu/28 trained, the tiny
preset's now) the tiny pi0 config gets that tower, and the benchmark times our jitted training step (openpi's model,
optimizer, loss; `tasks.train._Loop`) on openpi's `fake_obs` (three 224-px camera slots, as pi0 always encodes) and
`sample_actions` at batch 1. Each variant runs in its own process, so peak RSS is its own. The ratio is So400m's step
time over the chosen tower's.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

from bench.common import report

DEFAULT_VARIANTS = ("So400m/14:frozen", "mu/28:trained")


def measure(variant: str, trained: bool, batch: int, steps: int) -> dict:
    import flax.nnx as nnx
    import jax
    import numpy as np
    from openpi.shared import nnx_utils

    from tasks.policy.configs import for_task
    from tasks.policy.tiny_model import SmallTowerPi0Config
    from tasks.train import _Loop, peak_rss_mb

    config = for_task("PickCube-v1", "tiny")
    fields = {f.name: getattr(config.model, f.name) for f in dataclasses.fields(config.model)}
    model = SmallTowerPi0Config(**{**fields, "vision_variant": variant})
    frozen = nnx.Nothing() if trained else nnx_utils.PathRegex(".*/img/.*")
    config = dataclasses.replace(config, model=model, batch_size=batch, freeze_filter=frozen)
    loop = _Loop(config)
    state = loop.init_state(jax.random.key(0), for_restore=False)
    step = loop.compile_step()
    batch_data = (model.fake_obs(batch), model.fake_act(batch))
    t0 = time.perf_counter()
    state, info = step(jax.random.key(1), state, batch_data)
    jax.block_until_ready(info)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, info = step(jax.random.key(1), state, batch_data)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t0)
    policy_model = nnx.merge(state.model_def, state.params)
    sample = nnx_utils.module_jit(policy_model.sample_actions)
    obs = model.fake_obs(1)
    jax.block_until_ready(sample(jax.random.key(0), obs))
    samples = []
    for i in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(sample(jax.random.key(i), obs))
        samples.append(time.perf_counter() - t0)
    return {
        "variant": variant,
        "trained": trained,
        "first_step_s": first,
        "step_s": float(np.median(times)),
        "sample_s": float(np.median(samples)),
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str]) -> dict:
    if argv and argv[0] == "--one":
        variant, how, batch, steps = argv[1], argv[2], int(argv[3]), int(argv[4])
        print(json.dumps(measure(variant, how == "trained", batch, steps)))
        return {}
    batch = int(argv[0]) if argv else 8
    steps = int(argv[1]) if len(argv) > 1 else 5
    variants = argv[2:] or DEFAULT_VARIANTS
    results = []
    for spec in variants:
        variant, _, how = spec.partition(":")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_tiny_model",
                "--one",
                variant,
                how or "trained",
                str(batch),
                str(steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for r in results:
        label = f"{r['variant']} ({'trained' if r['trained'] else 'frozen'})"
        rows += [
            (f"{label}: step, batch {batch}", r["step_s"], "s"),
            (f"{label}: sample_actions, batch 1", r["sample_s"], "s"),
            (f"{label}: peak RSS", r["peak_rss_mb"], "MB"),
        ]
    return report(f"T1 tiny model, batch {batch}", rows, results[0]["step_s"] / results[-1]["step_s"], 10.0)


if __name__ == "__main__":
    main(sys.argv[1:])
