"""The task registry: one `TaskSpec` per ManiSkill env id.

Everything downstream (render, convert, stats, the openpi configs, verification) derives from the spec,
so adding a ManiSkill task with a motion-planning solution means adding one entry to `TASK_SPECS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np

CONTROL_MODES = ("pd_ee_delta_pose", "pd_ee_delta_pos", "pd_joint_pos", "pd_joint_delta_pos")
# pi0's image slots (openpi's model.IMAGE_KEYS); a wrist camera goes to a wrist slot.
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")

# The TaskSpec fields each stage reads. Their digest is part of the stage's cache key, so editing a spec
# rebuilds exactly the stages that read what changed (and, through the parents' digests, what follows them).
STAGE_SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "download": (),  # demos depend on the env id only
    "render": ("control_mode", "fps"),  # replay into the spec's control mode; fps checked against the env
    "convert": ("prompt", "cameras", "state_keys", "state_widths", "action_dim", "fps"),
    "stats": ("state_keys", "state_widths", "action_dim"),
    "train": ("prompt", "cameras", "state_keys", "state_widths", "action_dim", "control_mode", "fps"),
    "verify": ("prompt", "cameras", "state_keys", "state_widths", "action_dim", "control_mode", "fps"),
}

_STATE_KEY = re.compile(r"^(?P<path>[a-z_]+/[a-zA-Z_]+)(\[(?P<start>\d*):(?P<stop>\d*)\])?$")


class SpecError(ValueError):
    """Raised for unknown env ids or inconsistent task specs."""


@dataclasses.dataclass(frozen=True)
class StateKey:
    """One slice of an observation array, e.g. `agent/qpos[0:9]` (H5 path under `obs/`)."""

    path: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str) -> StateKey:
        m = _STATE_KEY.match(text)
        if not m:
            raise SpecError(f"bad state key {text!r}: expected 'group/name' or 'group/name[a:b]'")
        start = int(m["start"]) if m["start"] else None
        stop = int(m["stop"]) if m["stop"] else None
        return cls(m["path"], start, stop)

    def select(self, array: np.ndarray) -> np.ndarray:
        """Slices the last axis of a (T, D) or (D,) array."""
        return np.asarray(array)[..., self.start : self.stop]

    def width(self, full_width: int) -> int:
        return len(range(full_width)[self.start : self.stop])

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.path
        return f"{self.path}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What the pipeline needs to know about one ManiSkill task."""

    env_id: str
    prompt: str
    # ManiSkill sensor name -> openpi camera name. openpi's pi0 expects base_0_rgb, left_wrist_0_rgb,
    # right_wrist_0_rgb; cameras not mapped here are fed as black images with image_mask=False.
    cameras: tuple[tuple[str, str], ...] = (("base_camera", "base_0_rgb"),)
    # Observation slices concatenated (in this order) into the policy's state vector.
    state_keys: tuple[str, ...] = ("agent/qpos[0:9]", "extra/tcp_pose")
    # Width of each state key's full array, so the state width is known without opening a file.
    state_widths: tuple[int, ...] = (9, 7)
    action_dim: int = 7
    control_mode: str = "pd_ee_delta_pose"
    # Must equal the env's control frequency: openpi builds action chunks from timestamps.
    fps: int = 20
    # No evaluation step limit here: verify derives it from the data (the longest converted training episode
    # plus 15 %), since motion-planning demos run far past ManiSkill's max_episode_steps (PickCube: 49-88 vs 50).

    def __post_init__(self):
        if len(self.state_keys) != len(self.state_widths):
            raise SpecError(f"{self.env_id}: state_keys and state_widths differ in length")
        for key in self.state_keys:
            StateKey.parse(key)
        if self.control_mode not in CONTROL_MODES:
            raise SpecError(f"{self.env_id}: unknown control mode {self.control_mode!r}; known: {CONTROL_MODES}")
        if not self.cameras:
            raise SpecError(f"{self.env_id}: at least one camera is required")
        slots = [slot for _, slot in self.cameras]
        for slot in slots:
            if slot not in OPENPI_CAMERAS:
                raise SpecError(f"{self.env_id}: camera slot {slot!r} is not one of pi0's {OPENPI_CAMERAS}")
        if len(set(slots)) != len(slots):
            raise SpecError(f"{self.env_id}: two cameras map to one pi0 slot: {self.cameras}")
        if not self.prompt.strip():
            raise SpecError(f"{self.env_id}: the prompt is empty; write the instruction the policy is conditioned on")

    def digest(self, stage: str) -> str:
        """Digest of the fields `stage` reads (see STAGE_SPEC_FIELDS): part of that stage's cache key."""
        fields = {name: getattr(self, name) for name in STAGE_SPEC_FIELDS[stage]}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        data = json.loads(text)
        data["cameras"] = tuple(tuple(c) for c in data["cameras"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @property
    def parsed_state_keys(self) -> tuple[StateKey, ...]:
        return tuple(StateKey.parse(k) for k in self.state_keys)

    @property
    def state_dim(self) -> int:
        return sum(k.width(w) for k, w in zip(self.parsed_state_keys, self.state_widths))

    def state_dim_names(self) -> list[str]:
        """One name per state dimension, e.g. `agent/qpos[3]`, for messages that point at a dimension."""
        names = []
        for key, width in zip(self.parsed_state_keys, self.state_widths):
            names += [f"{key.path}[{i}]" for i in range(width)[key.start : key.stop]]
        return names

    @property
    def camera_map(self) -> dict[str, str]:
        return dict(self.cameras)

    def assemble_state(self, obs: dict) -> np.ndarray:
        """Builds the state vector from a nested obs dict (H5 `obs` group or a live env observation).

        Works on a single step (arrays of shape (D,)) or a whole episode ((T, D)).
        """
        parts = []
        for key in self.parsed_state_keys:
            group, name = key.path.split("/")
            try:
                value = obs[group][name]
            except KeyError as e:
                raise SpecError(f"{self.env_id}: observation has no '{key.path}' (needed by state key '{key}')") from e
            value = np.asarray(value, dtype=np.float32)
            parts.append(key.select(value))
        return np.concatenate(parts, axis=-1)


@dataclasses.dataclass(frozen=True)
class EnvLayout:
    """What a ManiSkill env offers in RGB observation mode (read by `tasks.sim.probe.probe_env`)."""

    env_id: str
    robot: str
    control_mode: str
    control_freq: int
    action_dim: int
    sensors: dict[str, tuple[int, int]]  # RGB sensor name -> (height, width)
    obs_widths: dict[str, int]  # "agent/qpos" -> 9, "extra/tcp_pose" -> 7: the last-axis width of each array

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def spec_problems(spec: TaskSpec, layout: EnvLayout) -> list[str]:
    """Everything about `spec` the env contradicts, each message naming what the env does offer."""
    problems = []
    for sensor, _ in spec.cameras:
        if sensor not in layout.sensors:
            problems.append(
                f"camera {sensor!r} is not an RGB sensor of {layout.env_id} (robot {layout.robot}); "
                f"its sensors are {sorted(layout.sensors)}"
            )
    sizes = {layout.sensors[sensor] for sensor, _ in spec.cameras if sensor in layout.sensors}
    if len(sizes) > 1:
        problems.append(
            f"the spec's cameras render at different sizes {sorted(sizes)}; one dataset holds one image "
            "size: set the render's camera_size"
        )
    for key, width in zip(spec.parsed_state_keys, spec.state_widths):
        if key.path not in layout.obs_widths:
            problems.append(
                f"state key {str(key)!r}: the RGB-mode observation of {layout.env_id} has no {key.path!r}; "
                f"it has {sorted(layout.obs_widths)} (object poses are in state mode only: the policy "
                "must see objects through its cameras)"
            )
        elif layout.obs_widths[key.path] != width:
            problems.append(
                f"state key {str(key)!r}: state_widths says {width} but {key.path} is "
                f"{layout.obs_widths[key.path]} wide"
            )
        elif (key.stop or 0) > width or (key.start or 0) >= width:
            problems.append(f"state key {str(key)!r} slices past the {width} values of {key.path}")
    if spec.control_mode != layout.control_mode:
        problems.append(f"probed in {layout.control_mode}, but the spec uses {spec.control_mode}")
    elif spec.action_dim != layout.action_dim:
        problems.append(
            f"action_dim is {spec.action_dim} but {layout.env_id}'s {layout.robot} takes {layout.action_dim} "
            f"values in {spec.control_mode}"
        )
    if spec.fps != layout.control_freq:
        problems.append(
            f"fps is {spec.fps} but {layout.env_id} controls at {layout.control_freq} Hz (the dataset fps "
            "must equal the control frequency: openpi builds action chunks from timestamps)"
        )
    return problems


def check_spec(spec: TaskSpec, layout: EnvLayout) -> None:
    problems = spec_problems(spec, layout)
    if problems:
        raise SpecError(
            f"the TaskSpec of {spec.env_id} does not fit the env: "
            + "; ".join(problems)
            + ". Fix it in tasks/core/specs.py (`python -m tasks.flows.task_specs derive "
            + spec.env_id
            + "` proposes one)"
        )


TASK_SPECS: dict[str, TaskSpec] = {
    spec.env_id: spec
    for spec in (
        TaskSpec(
            env_id="PickCube-v1",
            prompt="pick up the cube and move it to the goal position",
            # The goal marker is hidden from the cameras: the policy only knows the goal from the state.
            state_keys=("agent/qpos[0:9]", "extra/tcp_pose", "extra/goal_pos"),
            state_widths=(9, 7, 3),
        ),
        TaskSpec(
            env_id="StackCube-v1",
            prompt="stack the red cube on top of the green cube",
            # panda_wristcam: the hand camera goes to pi0's wrist slot
            cameras=(("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")),
        ),
        TaskSpec(
            env_id="PushCube-v1",
            # The goal region is drawn on the table, so the camera sees it.
            prompt="push the cube to the goal region",
            # The gripper keeps its orientation while pushing: the TCP quaternion has constant
            # components, which the stats stage would refuse. Position only.
            state_keys=("agent/qpos[0:9]", "extra/tcp_pose[0:3]"),
        ),
        TaskSpec(
            env_id="PullCube-v1",
            prompt="pull the cube to the goal region",
            # The gripper keeps its orientation while pulling: the TCP quaternion has constant
            # components, which the stats stage would refuse. Position only.
            state_keys=("agent/qpos[0:9]", "extra/tcp_pose[0:3]"),
        ),
        # The rest were derived by `python -m tasks.flows.task_specs derive ENV_ID` (3 planner demos each; docs/tasks.md has
        # the measured planner and replay success rates and episode lengths).
        TaskSpec(
            env_id="LiftPegUpright-v1",
            prompt="lift the peg and stand it upright on the table",
            state_keys=("agent/qpos", "extra/tcp_pose"),
        ),
        TaskSpec(
            env_id="PlaceSphere-v1",
            prompt="place the sphere into the shallow bin",
            # The bin's height never changes (bin_pos[2] is constant): only its x, y go into the state.
            state_keys=("agent/qpos", "extra/bin_pos[0:2]", "extra/tcp_pose"),
            state_widths=(9, 3, 7),
        ),
        TaskSpec(
            env_id="PegInsertionSide-v1",
            prompt="pick up the peg and insert its orange end into the hole in the box",
            cameras=(("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")),
            state_keys=("agent/qpos", "extra/tcp_pose"),
        ),
        TaskSpec(
            env_id="PlugCharger-v1",
            prompt="plug the charger into the wall receptacle",
            cameras=(("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")),
            state_keys=("agent/qpos", "extra/tcp_pose"),
        ),
        TaskSpec(
            env_id="PullCubeTool-v1",
            prompt="use the L-shaped tool to pull the cube closer",
            # The gripper holds the tool at one orientation in most demos (tcp_pose[4] is exactly constant over
            # seeds 0-1): position only, as for PullCube; qpos carries the orientation anyway.
            state_keys=("agent/qpos", "extra/tcp_pose[0:3]"),
        ),
        TaskSpec(
            env_id="StackPyramid-v1",
            prompt="stack the three cubes into a pyramid",
            cameras=(("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")),
            state_keys=("agent/qpos", "extra/tcp_pose"),
        ),
    )
}

# ManiSkill 3.0.1 motion-planning tasks that are not registered, and why (README and docs/tasks.md list them).
NOT_REGISTERED: dict[str, str] = {
    "DrawTriangle-v1": "ManiSkill 3.0.1's motion-planning solution raises on every seed (PandaStickMotionPlanningSolver "
    "passes 9 positional arguments to BaseMotionPlanningSolver.__init__, which takes 8), so no demos "
    "can be generated offline and the spec cannot be tested; panda_stick has no gripper (6 action "
    "values in pd_ee_delta_pose), which the pipeline itself can serve",
    "DrawSVG-v1": "same broken panda_stick solver as DrawTriangle-v1 in ManiSkill 3.0.1 (and the env needs svgpathtools, "
    "which is installed)",
}


def get_spec(env_id: str) -> TaskSpec:
    try:
        return TASK_SPECS[env_id]
    except KeyError:
        raise SpecError(
            f"unknown env id {env_id!r}: registered tasks are {sorted(TASK_SPECS)}. "
            "Add a TaskSpec for it in tasks/core/specs.py (it needs a ManiSkill motion-planning solution "
            "or downloadable demos)."
        ) from None
