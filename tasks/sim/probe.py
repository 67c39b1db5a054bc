"""What a ManiSkill task offers the pipeline, read from the env itself: probe it, check a spec against it.

- `probe_env`: makes the env in RGB observation mode and reads its robot, RGB sensors (with their size),
  the widths of the `agent/*` and `extra/*` observation arrays, the action width in a control mode and the
  control frequency. Scalar entries (`extra/is_grasped`) are left out: state keys slice a last axis.
- `check_registered`: every registered TaskSpec against its env, with messages that name the valid choices.

`tasks/flows/task_specs.py` derives a new spec from these and from rendered demos (`python -m tasks.flows.task_specs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from tasks.core.specs import OPENPI_CAMERAS, TASK_SPECS, EnvLayout, SpecError, spec_problems

# Observation arrays a policy may take as state. qvel is left out (openpi's LIBERO and DROID policies use
# positions only; velocities from a replay are noisy) and so are scalars.
STATE_GROUPS = ("agent", "extra")
SKIPPED_STATE = ("agent/qvel",)
WRIST_WORDS = ("hand", "wrist")


def probe_env(env_id: str, control_mode: str = "pd_ee_delta_pose", env_kwargs: dict | None = None) -> EnvLayout:
    with probed_env(env_id, control_mode, env_kwargs) as layout:
        return layout


@contextlib.contextmanager
def probed_env(
    env_id: str, control_mode: str = "pd_ee_delta_pose", env_kwargs: dict | None = None
) -> Iterator[EnvLayout]:
    """`probe_env` with the probed env left open until the block ends.

    SAPIEN frees its compiled render pipelines with the last env that uses them, and building them again costs
    ~7 s per process on software Vulkan (measured: a PickCube replay env made after the probe env was closed took
    7.5 s, made while it was open 0.3 s). A render worker replays inside the block.
    """
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the environments)

    from tasks.sim.devices import LAVAPIPE_MISSING, ensure_software_vulkan

    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.endswith(("-v0", "-v1", "-v2")) and "Cube" in k)
        raise SpecError(f"{env_id!r} is not a registered ManiSkill env (e.g. {known[:6]}); check the id and version")
    kwargs = {"render_backend": "cpu", **(env_kwargs or {})}
    ensure_software_vulkan(kwargs["render_backend"], f"probing {env_id} renders on the CPU: {LAVAPIPE_MISSING}")
    try:
        env = gym.make(env_id, obs_mode="rgb", control_mode=control_mode, sim_backend="physx_cpu", num_envs=1, **kwargs)
    except (AssertionError, KeyError, NotImplementedError) as e:
        raise SpecError(f"{env_id} cannot be made in control mode {control_mode!r}: {e}") from None
    try:
        obs, _ = env.reset(seed=0)
        base = env.unwrapped
        sensors = {
            name: tuple(int(n) for n in data["rgb"].shape[-3:-1])
            for name, data in obs["sensor_data"].items()
            if "rgb" in data
        }
        widths = {
            f"{group}/{name}": int(value.shape[-1])
            for group in STATE_GROUPS
            for name, value in obs.get(group, {}).items()
            if len(value.shape) >= 2
        }
        robot = base.robot_uids if isinstance(base.robot_uids, str) else ",".join(base.robot_uids)
        yield EnvLayout(
            env_id=env_id,
            robot=robot,
            control_mode=control_mode,
            control_freq=int(round(base.control_freq)),
            action_dim=int(env.action_space.shape[-1]),
            sensors=sensors,
            obs_widths=widths,
        )
    finally:
        env.close()


def check_registered(env_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Problems per registered task ({} entries are fine)."""
    found = {}
    # Each env is closed only once the next one is open: the next probe reuses the render pipelines (probed_env),
    # and at most two envs are held however many tasks are registered.
    held = contextlib.ExitStack()
    try:
        for env_id in env_ids or sorted(TASK_SPECS):
            spec = TASK_SPECS[env_id]
            with contextlib.ExitStack() as opening:
                found[env_id] = spec_problems(spec, opening.enter_context(probed_env(env_id, spec.control_mode)))
                held.close()
                held = opening.pop_all()
    finally:
        held.close()
    return found


def camera_slots(sensors: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Maps sensors to pi0's slots: `base_camera` (else the first non-wrist one) to base_0_rgb, wrist cameras to
    the wrist slots. Returns the mapping and the sensors left without a slot."""
    wrists = [s for s in sensors if any(w in s for w in WRIST_WORDS)]
    others = [s for s in sensors if s not in wrists]
    others.sort(key=lambda s: s != "base_camera")
    mapping = []
    if others:
        mapping.append((others[0], OPENPI_CAMERAS[0]))
    mapping += list(zip(wrists, OPENPI_CAMERAS[1:]))
    placed = {s for s, _ in mapping}
    return mapping, [s for s in sensors if s not in placed]


def varying_slices(values: np.ndarray, min_std: float) -> list[tuple[int, int]]:
    """Contiguous runs of the last axis whose std over all frames is at least `min_std` (the stats stage refuses
    state dimensions below it)."""
    moving = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1]).std(axis=0) >= min_std
    runs, start = [], None
    for i, m in enumerate([*moving, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs
