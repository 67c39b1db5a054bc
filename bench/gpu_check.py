"""G1: what no GPU has measured yet, in one go (under 10 minutes on one H100), written as JSON for docs/benchmarks.md.

    tools/gpu_check.sh [--out bench/out/gpu_check.json] [--steps 200] [--demos 8] ...

1. render: the same shard of planner demos rendered through the NVIDIA Vulkan driver (device gpu) and through
   lavapipe on the same host (device cpu): frames/s of each (P1 on a GPU host).
2. lora at production size: a pi0 base checkpoint of random weights, saved locally in openpi's params layout (bf16,
   like the released `pi0_base`), then our train stage on the lora preset from it through openpi's
   `CheckpointWeightLoader` for `steps` steps at batch 32, a resume point every `save_interval` steps: steps/s, peak
   GPU memory, what a save costs the loop, the checkpoint's size.
3. closed-loop evaluation (P7 on a GPU): verify on that checkpoint with `eval_envs` envs: episodes/min.

The weights are random, so nothing here says anything about success; the figures are time, memory and bytes. On a
machine without a GPU it refuses; `--cpu-dry-run` runs the same code at the tiny preset's size on the CPU (the
configs of lora and full resolved at production size, a tiny base checkpoint saved and loaded through
`CheckpointWeightLoader`, two steps, a short evaluation): the test suite runs that, so the day a GPU is lent there
is nothing left to write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import tyro

ENV_ID = "PickCube-v1"


class GpuCheckError(RuntimeError):
    """The check cannot run here; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class GpuCheckArgs:
    out: Path = Path("bench/out/gpu_check.json")  # where the figures are written (JSON)
    work: Path = Path("bench/out/gpu_check")  # scratch: the artifact store, the random base checkpoint
    demos: int = 8  # planner demos in the rendered training shard (one more is held out for verify)
    steps: int = 200  # lora training steps at production size
    batch_size: int = 32  # openpi's fine-tuning batch
    save_interval: int = 100  # a resume point every N steps (what a save costs the loop is measured)
    eval_envs: int = 8  # closed-loop envs verify steps in parallel
    episodes: int = 16  # closed-loop episodes
    cpu_dry_run: bool = False  # no GPU: the same code at the tiny preset's size on the CPU (the suite runs this)


def require_gpu(args: GpuCheckArgs) -> str:
    """JAX's backend; refuses a machine where JAX sees no GPU unless this is the CPU dry run."""
    import jax

    backend = jax.default_backend()
    if backend != "gpu" and not args.cpu_dry_run:
        raise GpuCheckError(
            f"JAX sees no GPU here (backend {backend}, devices {jax.devices()}): this check measures GPU rendering, "
            "lora training at production size and batched evaluation, which a CPU cannot run in any useful time. "
            "Run it on the GPU worker (`docker compose exec worker-gpu tools/gpu_check.sh`), or pass --cpu-dry-run "
            "to run its code at the tiny size"
        )
    return backend


def production_configs() -> dict:
    """lora and full as the production profile resolves them, with their checkpoint sizes (shapes only)."""
    from bench.bench_checkpoints import PRODUCTION_FRAMES, checkpoint_bytes
    from tasks.core.run_config import RunConfig
    from tasks.train import openpi_train_config

    figures = {}
    for preset in ("lora", "full"):
        params = RunConfig.build({"preset": preset}, profile="production").train_params()
        config = openpi_train_config(params, frames=PRODUCTION_FRAMES)
        size = checkpoint_bytes(preset)
        figures[preset] = {
            "config": config.name,
            "steps_for_14k_frames": config.num_train_steps,
            "batch_size": config.batch_size,
            "checkpoint_gb": round(size["total"] / 1e9, 2),
            "params_gb": round(size["params"] / 1e9, 2),
        }
    return figures


def use_vulkan_driver(device: str) -> None:
    """Points this process and the render workers it starts at the driver `device` renders with: the NVIDIA ICD for
    gpu (a VK_ICD_FILENAMES naming lavapipe, as tools/env.sh and the image set, would hide it), lavapipe for cpu."""
    from tasks.sim.devices import lavapipe_icd, require_lavapipe

    if device == "gpu":
        icd = lavapipe_icd()
        if icd is not None:
            os.environ["PIPELINE_LAVAPIPE_ICD"] = str(icd)  # still found for the cpu pass
        os.environ.pop("VK_ICD_FILENAMES", None)
    else:
        os.environ["VK_ICD_FILENAMES"] = str(require_lavapipe())


def make_data(args: GpuCheckArgs, root: str, devices: tuple[str, ...]) -> tuple[dict, dict]:
    """Demos planned, the training shard rendered on each device (frames/s), converted; a held-out demo too."""
    from tasks.convert import ConvertParams, convert
    from tasks.download import DownloadParams, download
    from tasks.render import RenderParams, render
    from tasks.stats import StatsParams, stats

    demos = download(DownloadParams(env_id=ENV_ID, count=args.demos + 1, seed=0), root=root)
    figures, shards = {}, {}
    for device in devices:
        use_vulkan_driver(device)
        shard = render(RenderParams(env_id=ENV_ID, shard_stop=args.demos, device=device), root=root, demos=demos.uri)
        figures[device] = {k: shard.metrics.get(k) for k in ("frames", "frames_per_second", "workers")}
        figures[device]["seconds"] = round(shard.seconds, 2)
        shards[device] = shard
    use_vulkan_driver(devices[0])  # the held-out shard and the evaluation render like the training frames
    held = render(RenderParams(env_id=ENV_ID, shard_start=args.demos, device=devices[0]), root=root, demos=demos.uri)
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[shards[devices[0]].uri])
    holdout = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[held.uri])
    norm = stats(StatsParams(env_id=ENV_ID), root=root, dataset=dataset.uri)
    return figures, {"dataset": dataset.uri, "holdout": holdout.uri, "stats": norm.uri}


def save_random_base(preset: str, directory: Path) -> tuple[Path, float]:
    """A base checkpoint of random weights in openpi's params layout, as `CheckpointWeightLoader` reads a released
    one: the model the preset fine-tunes, without LoRA adapters (pi0_base has none), bf16 like the release."""
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from tasks.core.params import TrainParams
    from tasks.policy.configs import model_config

    t0 = time.monotonic()
    horizon = TrainParams.action_horizon  # the dataclass default: what train_from_base trains with
    model_cfg = model_config("full" if preset == "lora" else preset, horizon)
    state = nnx.state(model_cfg.create(jax.random.key(0))).to_pure_dict()
    if preset != "tiny":
        state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), state)
    path = directory.resolve() / "params"
    if path.exists():
        shutil.rmtree(path)
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, {"params": state})
    return path, time.monotonic() - t0


def train_from_base(args: GpuCheckArgs, root: str, data: dict, base: Path, preset: str) -> tuple[str, dict]:
    import jax

    from tasks.core.params import TrainParams
    from tasks.train import train

    steps = args.steps if preset != "tiny" else 2
    params = TrainParams(
        env_id=ENV_ID,
        preset=preset,
        pretrained_uri=str(base),
        steps=steps,
        batch_size=args.batch_size if preset != "tiny" else 1,
        save_interval=min(args.save_interval, steps),
        log_interval=10 if preset != "tiny" else 1,
        num_workers=2 if preset != "tiny" else 0,
    )
    t0 = time.monotonic()
    result = train(params, root=root, dataset=data["dataset"], stats=data["stats"])
    m = result.metrics
    stats = jax.devices()[0].memory_stats() or {}
    return result.uri, {
        "preset": preset,
        "steps": m["steps"],
        "batch_size": m["batch_size"],
        "stage_seconds": round(time.monotonic() - t0, 1),
        "first_interval_s": m["first_interval_s"],  # includes jit compilation
        "steps_per_second": m["steps_per_second"],
        "median_step_s": m["median_step_s"],
        "peak_device_memory_gb": round(stats.get("peak_bytes_in_use", 0) / 1e9, 2) or None,
        "peak_rss_mb": m["peak_rss_mb"],
        "checkpoint_mb": m["checkpoint_mb"],
        "save_blocking_s": m["save_blocking_s"],
        "upload_wait_s": m["upload_wait_s"],
        "resume_point_uploads": m["resume_point_uploads"],
        "weights_loaded": m["weights_loaded"],
        "device": m["device"],
    }


def evaluate(args: GpuCheckArgs, root: str, data: dict, checkpoint: str) -> dict:
    from tasks.verify import VerifyParams, verify

    dry = args.cpu_dry_run
    params = VerifyParams(
        env_id=ENV_ID,
        holdout_frames=2,
        episodes=2 if dry else args.episodes,
        envs=2 if dry else args.eval_envs,
        max_steps=10 if dry else 0,
        harness=False,
    )
    result = verify(params, root=root, checkpoint=checkpoint, holdout=data["holdout"])
    m = result.metrics
    return {
        k: m.get(k)
        for k in ("episodes", "eval_envs", "closed_loop_seconds", "episodes_per_minute", "latency_ms_median")
    }


def main(args: GpuCheckArgs) -> dict:
    t0 = time.monotonic()
    backend = require_gpu(args)
    from tasks.policy.tokenizer import STAND_IN_FOR_RANDOM_WEIGHTS_ENV

    os.environ[STAND_IN_FOR_RANDOM_WEIGHTS_ENV] = "1"  # random weights: token ids mean nothing
    args.work.mkdir(parents=True, exist_ok=True)
    root = f"file://{args.work.resolve()}/store"
    preset = "tiny" if args.cpu_dry_run else "lora"
    figures: dict = {"backend": backend, "preset": preset, "production": production_configs()}
    figures["render"], data = make_data(args, root, ("cpu",) if args.cpu_dry_run else ("gpu", "cpu"))
    if "gpu" in figures["render"]:
        figures["render"]["gpu_over_lavapipe"] = round(
            figures["render"]["gpu"]["frames_per_second"] / figures["render"]["cpu"]["frames_per_second"], 2
        )
    base, figures["base_checkpoint_s"] = save_random_base(preset, args.work / f"base-{preset}")
    checkpoint, figures["train"] = train_from_base(args, root, data, base, preset)
    figures["eval"] = evaluate(args, root, data, checkpoint)
    figures["total_s"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    try:
        main(tyro.cli(GpuCheckArgs, description=__doc__.split("\n\n")[0]))
    except GpuCheckError as e:
        raise SystemExit(f"gpu_check: {e}") from None
