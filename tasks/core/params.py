"""Every stage's params: frozen, validated dataclasses, in one place (as openpi's training/config.py keeps its configs).

`RunConfig` (tasks/core/run_config.py) derives each of them from one run's settings; each stage's CLI exposes its
params as flags (the field comments are the flags' help). Validation here is what can be checked before any work:
ranges, choices, and the task's registration. A stage checks its inputs when it reads them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from tasks.core.specs import CONTROL_MODES, get_spec

# ---- run_config ----------------------------------------------------------------------------------------------------
Preset = Literal["tiny", "lora", "full"]  # see tasks/policy/configs.py; here so that DAG parsing need not import openpi
PRESETS: tuple[str, ...] = get_args(Preset)


# openpi's model families we train (tasks/policy/configs.py). pi0-FAST is not among them: openpi's gemma_fast has
# no small variant, so it could only be tested at 2B parameters, which no CPU test tier can train or roll out.
Model = Literal["pi0", "pi05"]
MODELS: tuple[str, ...] = get_args(Model)


PI0_BASE_PARAMS = "gs://openpi-assets/checkpoints/pi0_base/params"


PI05_BASE_PARAMS = "gs://openpi-assets/checkpoints/pi05_base/params"


BASE_PARAMS = {"pi0": PI0_BASE_PARAMS, "pi05": PI05_BASE_PARAMS}  # each family's released base checkpoint


BASE = "base"  # pretrained_uri: the model family's base checkpoint (BASE_PARAMS)


LATEST = "latest"  # pretrained_uri: the task's promoted checkpoint


# ---- configs -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PresetDefaults:
    batch_size: int  # openpi's fine-tuning batch (tiny: what a CPU test affords)
    num_train_steps: int  # the run length when `steps` is left 0
    peak_lr: float  # the cosine schedule's peak; it decays to a tenth of it over the run
    # SigLIP variant of pi0's vision tower ("<size>/<patch>"). openpi's Pi0 hard-codes So400m/14; the tiny preset builds
    # a small one (tasks/policy/tiny_model.py). A checkpoint loads only into a model with the tower it was trained with.
    vision_tower: str = "So400m/14"


PRESET_DEFAULTS = {
    # mu/28: one layer of width 32, 8x8 patches per 224-px camera; 0.13 s a training step at batch 1 on 2 cores
    # against 4.3 s with So400m/14 frozen (docs/benchmarks.md, "Tiny model"). Trained with the rest of the model.
    "tiny": PresetDefaults(batch_size=1, num_train_steps=4, peak_lr=1e-3, vision_tower="mu/28"),
    "lora": PresetDefaults(batch_size=32, num_train_steps=30_000, peak_lr=2.5e-5),
    "full": PresetDefaults(batch_size=32, num_train_steps=30_000, peak_lr=2.5e-5),
}


# openpi's fine-tuning recipe warms the learning rate up over 1 000 of its 30 000 steps; a run of any length keeps that
# proportion, at least one step and at most openpi's 1 000, so that the cosine decay always has steps left after the
# warm-up (optax refuses a schedule whose decay is empty: a 500-step LoRA run used to crash on the GPU worker).
WARMUP_FRACTION = 1_000 / 30_000
MAX_WARMUP_STEPS = 1_000


@dataclasses.dataclass(frozen=True)
class LrSchedule:
    warmup_steps: int  # linear warm-up from 0 to the peak
    decay_steps: int  # the cosine's end (openpi's CosineDecaySchedule counts the warm-up in it)
    peak_lr: float
    decay_lr: float  # the learning rate at decay_steps and after


def lr_schedule(preset: str, steps: int, peak_lr: float = 0.0) -> LrSchedule:
    """The learning-rate schedule of a run of `steps` steps (0: the preset's default length), checked as optax checks
    it (decay_steps > warmup_steps), before any work."""
    steps = steps or PRESET_DEFAULTS[preset].num_train_steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    warmup = min(MAX_WARMUP_STEPS, max(1, round(steps * WARMUP_FRACTION)))
    decay = max(steps, warmup + 1)
    peak = peak_lr or PRESET_DEFAULTS[preset].peak_lr
    schedule = LrSchedule(warmup_steps=warmup, decay_steps=decay, peak_lr=peak, decay_lr=peak / 10)
    if not 0 < schedule.warmup_steps < schedule.decay_steps:
        raise ValueError(f"bad learning-rate schedule for {steps} steps: {schedule}")
    return schedule


# The default run length of lora/full follows the training set: openpi's recipes pass over their data ~3.5 times
# (pi0_libero: 30k steps x 32 of LIBERO's ~270k frames) to ~32 times (pi0_aloha_sim: 20k x 32 of its ~20k frames of 50
# sim demos); LeRobot's ACT recipe on the same ALOHA sim data makes ~40. Our demos are like ALOHA sim's (one simulated
# task, tens to hundreds of scripted demos), so ~30 epochs; 30k steps at batch 32 would be ~70 epochs of 200 PickCube
# planner demos (~14k frames). Rounded to whole thousands (the save and validation intervals) and clamped: at least
# 2 000 steps (openpi's warm-up alone is 1 000), at most openpi's 30 000.
DEFAULT_EPOCHS = 30
DATA_SIZED_STEPS = (2_000, 30_000)
STEPS_UNIT = 1_000
# keep_period=AUTO_KEEP: keep about a sixth of the run as candidates (openpi keeps every 5 000th of 30 000 steps).
AUTO_KEEP = -1
AUTO_KEEP_FRACTION = 1 / 6


def data_sized_steps(frames: int, batch_size: int, epochs: float = DEFAULT_EPOCHS) -> int:
    """Training steps for `epochs` passes over `frames` frames at `batch_size`, rounded and clamped (see above)."""
    lo, hi = DATA_SIZED_STEPS
    steps = round(epochs * frames / batch_size / STEPS_UNIT) * STEPS_UNIT
    return min(hi, max(lo, steps))


# ---- download ------------------------------------------------------------------------------------------------------
Source = Literal["motionplanning", "hub", "s3"]
SOURCES: tuple[str, ...] = get_args(Source)


MAX_COUNT = 100_000


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    # Where the demos come from: motionplanning (ManiSkill's motion planner, offline), hub (ManiSkill's
    # download_demo) or s3 (a mirror at source_uri).
    source: Source = "motionplanning"
    count: int = 10  # demo episodes to deliver, 1..100000
    seed: int = 0  # first motion-planner seed (source=motionplanning): it tries seed, seed+1, ... until count succeed
    source_uri: str = ""  # source=s3: the folder holding trajectory.h5 and trajectory.json; "": unused

    def validate(self) -> None:
        get_spec(self.env_id)
        if self.source not in SOURCES:
            raise ValueError(f"unknown demo source {self.source!r}: use one of {SOURCES}")
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"demo count must be between 1 and {MAX_COUNT}, got {self.count!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.source == "s3" and not self.source_uri:
            raise ValueError("source=s3 needs source_uri: the folder holding trajectory.h5 and trajectory.json")


# ---- render --------------------------------------------------------------------------------------------------------
Device = Literal["auto", "cpu", "gpu"]  # render and rollout backends
DEVICES: tuple[str, ...] = get_args(Device)


@dataclasses.dataclass(frozen=True)
class RenderParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    control_mode: str = ""  # target control mode; "": the TaskSpec's (another is refused: every stage uses the spec's)
    shard_start: int = 0  # first demo episode of the shard (index into the demo set)
    shard_stop: int = -1  # end of the shard (episode index, exclusive); -1: to the end of the demo set
    min_success_ratio: float = 0.8  # fail when a smaller fraction (0..1) of the shard's episodes replays successfully
    device: Device = "auto"  # render backend: auto (gpu when one is present, else cpu) | cpu (lavapipe) | gpu
    workers: int = 0  # replay processes; 0: one per core (not in the cache key: output does not depend on it)
    camera_size: int = 0  # square camera resolution (ManiSkill's sensor_configs width/height); 0: the env's default

    def validate(self) -> None:
        spec = get_spec(self.env_id)
        if self.control_mode and self.control_mode not in CONTROL_MODES:
            raise ValueError(f"unknown control mode {self.control_mode!r}: use one of {CONTROL_MODES}")
        if self.control_mode and self.control_mode != spec.control_mode:
            raise ValueError(
                f"control mode {self.control_mode!r} contradicts the TaskSpec of {self.env_id} "
                f"({spec.control_mode!r}), which training and evaluation use: leave control_mode empty "
                "or change the spec in tasks/core/specs.py"
            )
        if self.shard_start < 0 or (self.shard_stop != -1 and self.shard_stop <= self.shard_start):
            raise ValueError(
                f"bad shard [{self.shard_start}, {self.shard_stop}): need 0 <= start < stop (or stop=-1 for 'to the end')"
            )
        if not 0.0 <= self.min_success_ratio <= 1.0:
            raise ValueError(f"min_success_ratio must be within [0, 1], got {self.min_success_ratio}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown render device {self.device!r}: use one of {DEVICES}")
        if self.camera_size and not 16 <= self.camera_size <= 1024:
            raise ValueError(f"camera_size must be 0 (the env's default) or 16..1024 pixels, got {self.camera_size}")
        if self.workers < 0 or self.workers > 256:
            raise ValueError(f"workers must be 0 (one per core) .. 256, got {self.workers}")

    def key_params(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("workers")
        d.pop("device")  # CPU and GPU rendering of the same state give the same scene; device is placement, not content
        d["control_mode"] = get_spec(self.env_id).control_mode
        d["spec"] = get_spec(self.env_id).digest("render")
        return d


# ---- convert -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvertParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    png_compress_level: int = 1  # zlib level of the embedded PNGs: 1 is ~5x faster than PIL's 6, files ~15 % larger
    image_threads: int = 0  # threads encoding the images; 0: two per core (not part of the cache key)

    def validate(self) -> None:
        get_spec(self.env_id)
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be 0..9, got {self.png_compress_level}")

    def key_params(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("image_threads")
        return d


# ---- stats ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StatsParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    action_horizon: int = 10  # action chunk length in steps; must equal the model's (the train config checks it)
    batch_size: int = 32  # frames per RunningStats update, as openpi's compute_norm_stats batches them
    min_std: float = 1e-5  # refuse state dimensions whose std is below this (near-constant in the demos)

    def validate(self) -> None:
        get_spec(self.env_id)
        if not 1 <= self.action_horizon <= 256:
            raise ValueError(f"action_horizon must be 1..256, got {self.action_horizon}")
        if not 1 <= self.batch_size <= 65536:
            raise ValueError(f"batch_size must be 1..65536, got {self.batch_size}")
        if not 0 <= self.min_std < 1:
            raise ValueError(f"min_std must be within [0, 1), got {self.min_std}")


# ---- train ---------------------------------------------------------------------------------------------------------
# Fields that change how the run is executed or observed, not what it produces: not part of the cache key.
# Not part of the key: where and how the same training runs (sharding over devices included), not what it learns.
RUNTIME_FIELDS = (
    "wandb",
    "wandb_project",
    "xla_mem_fraction",
    "num_workers",
    "log_interval",
    "fsdp_devices",
    "allow_cpu",
    "upload_inline",
)


class TrainError(ValueError):
    """Training cannot start with these inputs; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class TrainParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    model: Model = "pi0"  # openpi model family: pi0 | pi05
    preset: Preset = "tiny"  # training recipe: tiny (dummy-size model, CPU, tests/demo) | lora | full
    # training steps; 0: the preset's default, which for lora/full follows the data (DEFAULT_EPOCHS over the training
    # set's frames, `data_sized_steps`) once the dataset is known, else openpi's 30 000
    steps: int = 0
    batch_size: int = 0  # global batch size in frames; 0: the preset's default
    action_horizon: int = 10  # action chunk length the model predicts, in steps (must equal the stats artifact's)
    learning_rate: float = 0.0  # peak LR; 0: the preset's default
    save_interval: int = 0  # checkpoint (and resume point) every N steps; 0: only at the end
    # Keep the checkpoint of every N-th step in the artifact as a candidate for selection by closed-loop success
    # (openpi's keep_period: it keeps every 5000th); 0: the final checkpoint only; -1 (AUTO_KEEP): about a sixth of the
    # run, in multiples of val_interval (or of 1000), so it follows a data-sized run length.
    keep_period: int = 0
    seed: int = 42  # random seed of initialisation, data order and noise
    # Initial weights: "base" (the family's released checkpoint, BASE_PARAMS), openpi params (gs://..., s3://..., a
    # path), a train artifact of this store, or "latest" (the task's promoted checkpoint). Required by lora.
    pretrained_uri: str = ""
    from_scratch: bool = False  # full preset without weights: only when asked for explicitly
    log_interval: int = 1  # log the training loss every N steps
    wandb: bool = False  # log to Weights & Biases (WANDB_MODE=offline keeps the run local)
    wandb_project: str = "maniskill-openpi"  # Weights & Biases project name
    xla_mem_fraction: float = 0.9  # fraction of GPU memory JAX preallocates (XLA_PYTHON_CLIENT_MEM_FRACTION), 0.05..1
    num_workers: int = 0  # data loader worker processes; 0: load in the training process
    # Held-out validation loss (needs the held-out dataset): every N steps and at the end; 0: off.
    val_interval: int = 0
    val_batches: int = 4  # held-out batches per validation, the same ones each time (fixed noise: comparable)
    # openpi's fsdp_devices: shard parameters and optimizer state over this many devices (1: data parallel only).
    fsdp_devices: int = 1
    # lora/full on a JAX CPU backend (a GPU worker whose JAX cannot see the GPU): refused unless this is set, since
    # a real-size step takes minutes there and the run would look alive for days.
    allow_cpu: bool = False
    # Upload each resume point inline, the loop waiting (the behaviour before background uploads; for benchmarks).
    upload_inline: bool = False

    def validate(self) -> None:
        get_spec(self.env_id)
        if self.model not in MODELS:
            raise ValueError(
                f"unknown model {self.model!r}: choose one of {', '.join(MODELS)} (openpi's gemma_fast has no "
                "small variant, so pi0-FAST is not offered: it could not be tested)"
            )
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if not 0 <= self.steps <= 10_000_000:
            raise ValueError(f"steps must be 0 (preset default) .. 10000000, got {self.steps}")
        if not 0 <= self.batch_size <= 4096:
            raise ValueError(f"batch_size must be 0 (preset default) .. 4096, got {self.batch_size}")
        if not 1 <= self.action_horizon <= 256:
            raise ValueError(f"action_horizon must be 1..256, got {self.action_horizon}")
        if not 0 <= self.learning_rate < 1:
            raise ValueError(f"learning_rate must be within [0, 1), got {self.learning_rate}")
        if self.save_interval < 0 or self.log_interval < 1 or self.keep_period < AUTO_KEEP:
            raise ValueError("save_interval must be >= 0, keep_period >= 0 (or -1: auto) and log_interval >= 1")
        self.lr_schedule()  # the optimizer's schedule, checked here rather than when the GPU worker builds it
        if self.val_interval < 0 or not 1 <= self.val_batches <= 1000:
            raise ValueError("val_interval must be >= 0 (0: off) and val_batches 1..1000")
        if not 1 <= self.fsdp_devices <= 512:
            raise ValueError(f"fsdp_devices must be 1..512, got {self.fsdp_devices}")
        if not 0.05 <= self.xla_mem_fraction <= 1.0:
            raise ValueError(f"xla_mem_fraction must be within [0.05, 1], got {self.xla_mem_fraction}")
        uri = self.weights_uri()
        base = BASE_PARAMS[self.model]
        if uri and uri != LATEST and not uri.startswith(("gs://", "s3://", "/", "file://")):
            raise ValueError(
                f"pretrained_uri {uri!r} must be 'base', gs://..., s3://..., file://..., an absolute path or 'latest'"
            )
        other = {u: m for m, u in BASE_PARAMS.items() if m != self.model}
        if uri.rstrip("/") in other:
            raise TrainError(
                f"pretrained_uri {uri} is {other[uri.rstrip('/')]}'s base checkpoint, which does not load "
                f"into a {self.model} model: use pretrained_uri=base ({base}) or set model="
                f"{other[uri.rstrip('/')]}"
            )
        if self.preset == "lora" and not uri:
            raise TrainError(
                "preset lora needs pretrained weights: LoRA adapters on a randomly initialised, frozen Gemma learn "
                f"nothing useful. Set pretrained_uri=base ({base}; or an s3:// / local copy of it, a train artifact, "
                "or 'latest')"
            )
        if self.preset == "full" and not uri and not self.from_scratch:
            raise TrainError(
                f"preset full without pretrained_uri would train {self.model} from random initialisation: "
                f"set pretrained_uri=base ({base}), or from_scratch=true if that is really what you want"
            )
        if self.from_scratch and (uri or self.preset != "full"):
            raise TrainError(
                "from_scratch applies to the full preset without pretrained_uri only (tiny always starts "
                "from scratch unless given a train artifact; lora needs weights)"
            )
        if self.preset == "tiny" and uri.startswith("gs://"):
            raise TrainError(
                f"the tiny preset's dummy gemma variants match no released checkpoint ({uri}); it can "
                "start from scratch or from a tiny train artifact (its URI or 'latest')"
            )

    def resolved_steps(self, frames: int | None = None) -> int:
        """`steps`; when 0, the preset's default: for lora/full sized to `frames` training frames when known."""
        if self.steps:
            return self.steps
        if frames and self.preset != "tiny":
            return data_sized_steps(frames, self.batch_size or PRESET_DEFAULTS[self.preset].batch_size)
        return PRESET_DEFAULTS[self.preset].num_train_steps

    def steps_source(self, frames: int | None = None) -> str:
        """Where the run length came from, in words (the run report carries it)."""
        if self.steps:
            return "given"
        if frames and self.preset != "tiny":
            return f"data-sized: {DEFAULT_EPOCHS} epochs of {frames} frames, rounded and clamped to {DATA_SIZED_STEPS}"
        return f"the {self.preset} preset's default"

    def resolved_keep_period(self, num_train_steps: int) -> int:
        """keep_period, with AUTO_KEEP resolved for a run of `num_train_steps` (0 when the run is too short)."""
        if self.keep_period != AUTO_KEEP:
            return self.keep_period
        unit = self.val_interval or STEPS_UNIT
        return int(num_train_steps * AUTO_KEEP_FRACTION) // unit * unit

    def lr_schedule(self) -> LrSchedule:
        """The learning-rate schedule this run trains with (warm-up and decay scaled to its length)."""
        return lr_schedule(self.preset, self.resolved_steps(), self.learning_rate)

    def weights_uri(self) -> str:
        """pretrained_uri with 'base' spelled out as the family's released checkpoint."""
        return BASE_PARAMS[self.model] if self.pretrained_uri == BASE else self.pretrained_uri

    def key_params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in RUNTIME_FIELDS:
            d.pop(name)
        if d["model"] == "pi0":
            del d["model"]  # pi0 was the only family before `model` existed: its artifacts keep their keys
        if self.keep_period != AUTO_KEEP and not candidate_steps(self, self.resolved_steps()):
            del d["keep_period"]  # nor do runs that keep only the final checkpoint change their keys
        return d


def candidate_steps(params: TrainParams, num_train_steps: int) -> list[int]:
    """The steps before the last whose checkpoints are kept in the artifact (keep_period)."""
    period = params.resolved_keep_period(num_train_steps)
    return list(range(period, num_train_steps, period)) if period else []


# ---- verify --------------------------------------------------------------------------------------------------------
# Checkpoint selection scores the kept checkpoints on their own seeds, this far from the protocol's: the chosen one is
# then verified again on the protocol's seeds, so its promotion figures are not the ones it was chosen by (the best of
# several on the same seeds is biased upward, the winner's curse).
SELECTION_SEED_OFFSET = 500_000


@dataclasses.dataclass(frozen=True)
class VerifyParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    holdout_frames: int = 8  # open-loop frames, evenly spaced over the held-out dataset
    episodes: int = 4  # closed-loop episodes (0: skip the rollout and the harness check)
    max_steps: int = 0  # closed-loop step limit per episode; 0: the longest training episode + 15 %
    execute_steps: int = 0  # actions executed per predicted chunk (the replan interval); 0: half the action horizon
    seed: int = 0  # closed-loop seed offset: episode seeds are EVAL_SEED_BASE + seed + episode
    oracle_episodes: int = 0  # held-out demos the oracle replays for the harness check; 0: all of them
    max_action_mae: float = 0.0  # pass threshold on the open-loop mean absolute action error (env units); 0: none
    min_success_rate: float = 0.0  # pass threshold on closed-loop success (success_once); 0: none
    device: Device = "auto"  # rollout render backend: auto (the training frames' backend) | cpu | gpu
    # Closed-loop envs stepped together (worker processes; one batched policy call per replanning step);
    # 0: auto (tasks.sim.rollout.auto_env_count). Not in the key: the same seeds and protocol (only the policy's noise
    # draws depend on the batching, as they do on any rerun).
    envs: int = 0
    # Which of the train artifact's kept checkpoints to evaluate (its `checkpoint_steps`); 0: the final one.
    step: int = 0
    # The oracle's harness check. Off for the selection among kept checkpoints: it does not depend on the policy, and
    # the confirming verification of the chosen checkpoint runs it.
    harness: bool = True

    def validate(self) -> None:
        get_spec(self.env_id)
        if not 1 <= self.holdout_frames <= 10_000:
            raise ValueError(f"holdout_frames must be 1..10000, got {self.holdout_frames}")
        if not 0 <= self.episodes <= 10_000:
            raise ValueError(f"episodes must be 0..10000, got {self.episodes}")
        if not 0 <= self.max_steps <= 100_000 or self.execute_steps < 0:
            raise ValueError("max_steps must be 0..100000 and execute_steps >= 0")
        if not 0 <= self.oracle_episodes <= 10_000:
            raise ValueError(f"oracle_episodes must be 0 (all held-out demos) .. 10000, got {self.oracle_episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.max_action_mae < 0 or not 0 <= self.min_success_rate <= 1:
            raise ValueError("max_action_mae must be >= 0 and min_success_rate within [0, 1]")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}: use one of {DEVICES}")
        if not 0 <= self.envs <= 64:
            raise ValueError(f"envs must be 0 (auto) .. 64, got {self.envs}")
        if self.step < 0:
            raise ValueError(f"step must be >= 0 (0: the final checkpoint), got {self.step}")

    def key_params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("device")  # the resolved render backend is keyed instead (it is part of the protocol)
        d.pop("envs")  # how many envs play the seeds at once does not change what is measured
        if not d["step"]:
            del d["step"]  # the final checkpoint keeps the keys it had before candidates existed
        return d


# ---- select_checkpoint ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SelectParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1

    def validate(self) -> None:
        get_spec(self.env_id)


# ---- promote -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PromoteParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    force: bool = False  # promote a passed candidate even when not shown better than the current latest (rollback)
    actor: str = ""  # who promotes, for the history ("": the CLI's user@host); the DAG passes its dag and run id
    require_approval: bool = False  # a person must approve before latest moves (approved_by / rejected_by)
    approved_by: str = ""  # who approved this candidate (the human-in-the-loop response's user)
    rejected_by: str = ""  # who rejected it (or "timeout" when nobody answered in time)

    def validate(self) -> None:
        get_spec(self.env_id)
        if self.approved_by and self.rejected_by:
            raise ValueError("a candidate is either approved_by or rejected_by someone, not both")
