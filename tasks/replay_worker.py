"""One render worker: ManiSkill's own `replay_trajectory` on a slice of a demo file, in its own process.

The render stage starts several of these so that every core renders (software Vulkan renders one frame
on about one core; several single-threaded processes beat one multi-threaded one).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traj_path")
    parser.add_argument("--control-mode", required=True)
    parser.add_argument("--obs-mode", default="rgb")
    parser.add_argument("--expect-fps", type=int, required=True)
    args = parser.parse_args(argv)

    import gymnasium as gym
    import json

    import mani_skill.envs  # noqa: F401  (registers the environments)
    from mani_skill.trajectory import replay_trajectory

    meta = json.loads(open(args.traj_path.replace(".h5", ".json")).read())
    env_id = meta["env_info"]["env_id"]
    kwargs = meta["env_info"]["env_kwargs"]
    replay_trajectory.main(replay_trajectory.Args(
        traj_path=args.traj_path, sim_backend="physx_cpu", obs_mode=args.obs_mode,
        target_control_mode=args.control_mode, save_traj=True, allow_failure=True, num_envs=1,
    ))
    # Checked after the replay: by then SAPIEN's renderer is up and a second env costs ~0.1 s, not ~6 s.
    probe = gym.make(env_id, obs_mode="none", control_mode=args.control_mode,
                     render_backend=kwargs.get("render_backend", "cpu"), sim_backend="physx_cpu")
    control_freq = int(round(probe.unwrapped.control_freq))
    probe.close()
    if control_freq != args.expect_fps:
        print(f"{env_id} controls at {control_freq} Hz but its TaskSpec says fps={args.expect_fps}; "
              "fix fps in tasks/specs.py (the dataset fps must equal the control frequency)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
