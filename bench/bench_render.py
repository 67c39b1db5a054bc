"""P1: render frames/s, our render stage vs plain `replay_trajectory` (one process) on the same 20 demos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from bench.common import ENV_ID, OUT, demos, local, report, store_root, timer
from tasks.render import RenderParams, render, worker_env


def main(count: int = 20) -> dict:
    d = demos(count)
    src = local(d)
    work = OUT / "p1_upstream"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("trajectory.h5", "trajectory.json"):
        shutil.copy(src / name, work / name)
    env, _ = worker_env("cpu")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS"):  # upstream as a user runs it: default threads
        env.pop(k, None)
        if k in os.environ:
            env[k] = os.environ[k]
    cmd = [
        sys.executable,
        "-m",
        "mani_skill.trajectory.replay_trajectory",
        "--traj-path",
        str(work / "trajectory.h5"),
        "--save-traj",
        "--target-control-mode",
        "pd_ee_delta_pose",
        "--obs-mode",
        "rgb",
        "--sim-backend",
        "cpu",
    ]
    with timer() as t_up:
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    meta = json.loads((work / "trajectory.rgb.pd_ee_delta_pose.physx_cpu.json").read_text())
    up_frames = sum(e["elapsed_steps"] + 1 for e in meta["episodes"])

    shutil.rmtree(OUT / "p1_ours", ignore_errors=True)
    ours_store = store_root("p1_ours")
    # same demos, copied into a fresh store so nothing is cached
    from tasks.core.store import ArtifactStore

    store = ArtifactStore(store_root("store"))
    manifest = store.require(d.uri)
    fresh = ArtifactStore(ours_store)
    fresh.publish(src, manifest.__class__(**{**manifest.__dict__, "uri": fresh.uri(ENV_ID, "download", manifest.key)}))
    with timer() as t_ours:
        r = render(
            RenderParams(env_id=ENV_ID, device="cpu"),
            root=ours_store,
            demos=fresh.uri(ENV_ID, "download", manifest.key),
        )
    ours_frames = r.metrics["frames"]
    up_fps, ours_fps = up_frames / t_up["s"], ours_frames / t_ours["s"]
    return report(
        f"P1 render, {count} {ENV_ID} demos, pd_ee_delta_pose, rgb 128x128, CPU (lavapipe)",
        [
            ("upstream replay_trajectory, 1 process: frames", up_frames, ""),
            ("upstream wall time (incl. start-up)", t_up["s"], "s"),
            ("upstream frames/s", up_fps, "fps"),
            (f"ours ({r.metrics['workers']} workers): frames", ours_frames, ""),
            ("ours wall time (incl. start-up, merge, publish)", t_ours["s"], "s"),
            ("ours frames/s", ours_fps, "fps"),
        ],
        ours_fps / up_fps,
        1.8,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
