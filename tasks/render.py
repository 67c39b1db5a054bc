"""render: replay demos with RGB cameras in the target control mode, on a shard of episodes.

Uses ManiSkill's `replay_trajectory` (control-mode conversion, state replay, its H5 writer) in several
worker processes, one per core, then merges their files with ManiSkill's `merge_trajectories`. CPU
rendering goes through software Vulkan (Mesa lavapipe); with a GPU the workers render on it.

Output artifact: `trajectory.h5` + `trajectory.json` holding the successfully replayed episodes, each
with `source_episode_id`; metrics record the replay success ratio and the failed episodes. Below
`min_success_ratio` the stage fails and names the episodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from tasks.core import cli
from tasks.core.demo_files import episodes_fingerprint, load_episodes, sidecar, write_subset
from tasks.core.errors import NotRetryable
from tasks.core.params import RenderParams
from tasks.core.specs import get_spec
from tasks.core.stage import StageResult, require, run_stage
from tasks.core.store import ArtifactStore, work_dir
from tasks.sim.devices import PROJECT_ROOT, require_lavapipe, resolve_device

STAGE = "render"
CODE_VERSION = "2"  # 2: keyed on the shard's episodes


class RenderError(NotRetryable):
    """Rendering failed or too few demos replayed successfully."""


def plan_shards(demo_count: int, holdout_count: int, episodes_per_shard: int) -> list[dict]:
    """One held-out shard over the first `holdout_count` episodes (never trained on), then training shards.

    Held-out episodes come first so that a demo set that grows (more demos, same seed) keeps every
    episode where it was: the held-out shard and the full training shards keep their keys and are cache
    hits; only the last partial shard and the new ones are rendered. The DAGs and tasks/flows/pipeline.py
    share this plan, so the same demo set always gives the same render keys, whichever way it is run.
    """
    shards = [{"start": 0, "stop": holdout_count, "split": "holdout"}]
    end = holdout_count + demo_count
    shards += [
        {"start": a, "stop": min(a + episodes_per_shard, end), "split": "train"}
        for a in range(holdout_count, end, episodes_per_shard)
    ]
    return shards


def worker_env(device: str, workers: int = 0) -> tuple[dict[str, str], str]:
    """The render workers' environment; `workers` of them share the cores (0: one per core)."""
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    # One thread per worker process: the workers, not the threads, use the cores. Fewer workers than cores (a shard
    # with fewer episodes): lavapipe's rasterizer threads take the cores they leave (one worker on 2 cores: its
    # SAPIEN start-up 7.6 s -> 4.5 s). Pixels do not depend on the thread count.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LP_NUM_THREADS=str(max(1, cores // (workers or cores))))
    device = resolve_device(device)
    if device == "cpu":
        env["VK_ICD_FILENAMES"] = str(require_lavapipe(RenderError))
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env, device


def balanced_groups(steps: list[int], n_groups: int) -> list[list[int]]:
    """Contiguous episode groups with about equal step counts, so no worker is left rendering alone."""
    cum = np.cumsum(steps)
    total = int(cum[-1])
    cuts = [0] + [int(np.argmin(np.abs(cum - total * k / n_groups))) + 1 for k in range(1, n_groups)] + [len(steps)]
    cuts = sorted(set(min(max(c, 0), len(steps)) for c in cuts))
    return [list(range(a, b)) for a, b in zip(cuts, cuts[1:]) if b > a]


def merge_parts(parts: list[Path], merged: Path) -> None:
    """Concatenates worker outputs in order, renumbering episodes.

    Same result as ManiSkill's `merge_trajectories`, which we do not call here only because importing
    it loads all of mani_skill and torch (~5 s) into this otherwise light process.
    """
    meta = None
    episodes = []
    with h5py.File(merged, "w") as dst:
        for part in parts:
            part_meta = json.loads(sidecar(part).read_text())
            meta = meta or part_meta
            with h5py.File(part, "r") as src:
                for ep in part_meta["episodes"]:
                    new_id = len(episodes)
                    src.copy(f"traj_{ep['episode_id']}", dst, f"traj_{new_id}")
                    episodes.append({**ep, "episode_id": new_id})
    meta["episodes"] = episodes
    sidecar(merged).write_text(json.dumps(meta))


def render(params: RenderParams, root: str, demos: str) -> StageResult:
    params.validate()
    spec = get_spec(params.env_id)
    store = ArtifactStore(root)
    parent = require(store, demos, stage="download", env_id=params.env_id, what="demos")
    inputs = work_dir()
    try:
        _, demo_dir = store.fetch(demos, inputs)
        src = demo_dir / "trajectory.h5"
        episodes = load_episodes(src)
        stop = len(episodes) if params.shard_stop == -1 else min(params.shard_stop, len(episodes))
        shard = episodes[params.shard_start : stop]
        if not shard:
            raise RenderError(
                f"shard [{params.shard_start}, {params.shard_stop}) of {demos} is empty: the demo set has {len(episodes)} episodes"
            )
        return _render_shard(params, spec, store, parent, src, shard, stop)
    finally:
        shutil.rmtree(inputs, ignore_errors=True)


def _render_shard(
    params: RenderParams, spec, store: ArtifactStore, parent, src: Path, shard: list[dict], stop: int
) -> StageResult:
    def build(out: Path) -> dict:
        scratch = out.parent / "replay"
        scratch.mkdir()
        n_workers = max(1, min(params.workers or os.cpu_count() or 1, len(shard)))
        groups = balanced_groups([int(e.get("elapsed_steps", 1)) for e in shard], n_workers)
        env, device = worker_env(params.device, len(groups))
        procs, outputs, logs = [], [], []
        t0 = time.monotonic()
        for w, idx in enumerate(groups):
            sub = scratch / f"part{w}.h5"
            write_subset(src, [shard[i] for i in idx], sub)
            meta = json.loads(sidecar(sub).read_text())
            meta["env_info"]["env_kwargs"]["render_backend"] = "gpu" if device == "gpu" else "cpu"
            if params.camera_size:
                # Every sensor at this size. Recorded in the rendered trajectory.json, whose env kwargs verify's
                # closed-loop episodes reuse, so the policy is evaluated on images like the ones it trained on.
                kwargs = meta["env_info"]["env_kwargs"]
                kwargs["sensor_configs"] = {
                    **kwargs.get("sensor_configs", {}),  # keeps the planner's shader pack
                    "width": params.camera_size,
                    "height": params.camera_size,
                }
            sidecar(sub).write_text(json.dumps(meta))
            log_path = scratch / f"part{w}.log"
            logs.append(log_path)
            cmd = [
                sys.executable,
                "-m",
                "tasks.sim.replay_worker",
                str(sub),
                "--control-mode",
                spec.control_mode,
                "--spec",
                spec.to_json(),
            ]
            procs.append(
                subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
            )
            outputs.append(scratch / f"part{w}.rgb.{spec.control_mode}.physx_cpu.h5")
        codes = [p.wait() for p in procs]
        seconds = time.monotonic() - t0
        for code, log_path in zip(codes, logs):
            if code != 0:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RenderError(f"render worker failed (exit {code}); last output:\n{tail}")
        # Merge in shard order and map each replayed episode back to its demo episode.
        merged = scratch / "merged.h5"
        merge_parts(outputs, merged)
        replayed = json.loads(sidecar(merged).read_text())
        if len(replayed["episodes"]) != len(shard):
            raise RenderError(f"replay returned {len(replayed['episodes'])} episodes for {len(shard)} demos")
        ok, failed = [], []
        for src_ep, ep in zip(shard, replayed["episodes"]):
            ep["source_episode_id"] = src_ep["episode_id"]
            (ok if ep.get("success") else failed).append(ep)
        sidecar(merged).write_text(json.dumps(replayed))
        ratio = len(ok) / len(shard)
        if ratio < params.min_success_ratio or not ok:
            raise RenderError(
                f"only {len(ok)}/{len(shard)} demos of {params.env_id} replayed successfully in {spec.control_mode} "
                f"(ratio {ratio:.2f} < min_success_ratio {params.min_success_ratio}); failed demo episodes: "
                f"{[e['source_episode_id'] for e in failed]}. Check the demos' control mode and env version, "
                "or lower min_success_ratio to keep the successful ones."
            )
        write_subset(merged, ok, out / "trajectory.h5")
        frames = int(sum(e["elapsed_steps"] + 1 for e in replayed["episodes"]))
        return {
            "episodes": len(shard),
            "successes": len(ok),
            "success_ratio": round(ratio, 4),
            "failed_episodes": [e["source_episode_id"] for e in failed],
            "frames": frames,
            "render_seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 2),
            "workers": len(groups),
            "device": device,
            "shard": [params.shard_start, stop],
        }

    # Keyed on the shard's own episodes, not the whole demo set: see plan_shards.
    return run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params=params.key_params(),
        parents=[parent],
        build=build,
        key_inputs=[episodes_fingerprint(src, shard)],
    )


main = cli.cli(__doc__, RenderParams, render, inputs={"demos": False})

if __name__ == "__main__":
    raise SystemExit(main())
