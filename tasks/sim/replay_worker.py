"""One render worker: ManiSkill's own `replay_trajectory` on a slice of a demo file, in its own process.

Before replaying it checks the task's TaskSpec against the env (tasks.core.specs.spec_problems) and exits 3 with
the problems, which the render stage reports.

The render stage starts several of these so that every core renders (software Vulkan renders one frame
on about one core; several single-threaded processes beat one multi-threaded one).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from tasks.core.cli import configure_logging, first_paragraph

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.sim.replay_worker", description=first_paragraph(__doc__))
    parser.add_argument("traj_path", help="the demo slice to replay: a trajectory .h5 with its .json next to it")
    parser.add_argument(
        "--control-mode", required=True, help="target control mode to replay into, e.g. pd_ee_delta_pose"
    )
    parser.add_argument("--obs-mode", default="rgb", help="ManiSkill observation mode to record (default %(default)s)")
    parser.add_argument("--spec", required=True, help="the TaskSpec the render stage renders for, as JSON")
    args = parser.parse_args(argv)

    import json

    from mani_skill.trajectory import replay_trajectory

    from tasks.core.specs import SpecError, TaskSpec, check_spec
    from tasks.sim.probe import probed_env

    meta = json.loads(open(args.traj_path.replace(".h5", ".json")).read())
    env_id = meta["env_info"]["env_id"]
    kwargs = meta["env_info"]["env_kwargs"]
    # The spec against the env, before any rendering: a wrong camera, a state key the RGB observation lacks or a
    # wrong fps fails here with the valid choices. The probe env stays open during the replay so that the replay's
    # env reuses its render pipelines instead of compiling them again (see probed_env).
    # The replay's env kwargs (a hub demo's robot_uids or task kwargs included), less what the replay itself sets.
    replay_sets = ("obs_mode", "control_mode", "sim_backend", "num_envs", "render_mode", "reward_mode")
    probe_kwargs = {k: v for k, v in kwargs.items() if k not in replay_sets}
    # the replay's env renders in rgb_array mode (its human render camera): the probe builds that pipeline too
    with probed_env(env_id, args.control_mode, {**probe_kwargs, "render_mode": "rgb_array"}) as layout:
        try:
            check_spec(TaskSpec.from_json(args.spec), layout)
        except SpecError as e:
            print(e, file=sys.stderr)
            return 3
        replay_trajectory.main(
            replay_trajectory.Args(
                traj_path=args.traj_path,
                sim_backend="physx_cpu",
                obs_mode=args.obs_mode,
                target_control_mode=args.control_mode,
                save_traj=True,
                allow_failure=True,
                num_envs=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
