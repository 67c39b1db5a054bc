"""The run configuration: one typed, validated object per pipeline run, with two profiles.

Every default of a run lives here, once. The DAGs' params forms are generated from this class
(tasks/airflow_tasks/params.py), `tasks/flows/pipeline.py` and the demo build it directly, and each stage's
params are derived from it (`download_params()`, `render_params()`, ...), so no other file translates
run settings into stage settings.

Profiles (`PIPELINE_PROFILE`, default `production`):
- `production`: what a deployment runs on its schedule and shows in the UI form. openpi's own
  fine-tuning recipe: the `lora` preset from `pi0_base` (gemma_2b_lora + gemma_300m_lora), its batch (32),
  LR schedule (cosine, warm-up 1k, peak 2.5e-5) and EMA setting, for about 30 passes over the training
  frames (openpi's ALOHA sim recipe; ~13k steps for 200 PickCube demos, at most openpi's 30k), checkpoints
  kept for selection every sixth of the run, a resume point every 1000 steps, 2 data-loader workers, W&B on (offline unless a connection says otherwise); 200
  training demos, 20 held-out demos (validation loss every 1000 steps, the oracle's harness check) and 50
  closed-loop episodes judged against a 20 % success floor, so a success rate means something and the
  promotion test (tasks/promote.py) can tell a better policy from noise.
- `demo`: the CPU-sized run of `tools/demo.sh` and the tests: the tiny preset from scratch, 4 steps,
  batch 1, 4 demos, 1 held out, 2 short closed-loop episodes whose success is reported but not judged.

A key a trigger's conf or an asset event's extra gives that this class does not know is refused with
the closest valid name (a typo must not silently run with the default).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from typing import Any

from tasks.core.params import (
    AUTO_KEEP,
    BASE,
    MODELS,
    PRESETS,
    SELECTION_SEED_OFFSET,
    ConvertParams,
    DownloadParams,
    PromoteParams,
    RenderParams,
    StatsParams,
    TrainParams,
    VerifyParams,
)
from tasks.core.specs import CONTROL_MODES, TASK_SPECS, get_spec

PROFILE_ENV = "PIPELINE_PROFILE"
PROFILES = ("production", "demo")
DEMO_SOURCES = ("motionplanning", "hub", "s3")
FROM_SPEC = "from_spec"  # control_mode: the TaskSpec's
# A demos asset event (new demos landed) may set these; anything else in its extra is refused.
ASSET_OVERRIDES = ("env_id", "demo_source", "demo_source_uri", "demo_count")
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
SECTIONS = ("Task and demos", "Render", "Training", "Evaluation", "Storage and accounts")


class ConfigError(ValueError):
    """A run configuration that cannot work; the message names the setting and the fix."""


def _opt(default: Any, description: str, section: str, title: str, **schema: Any) -> Any:
    """A run setting: its default (the production one), its form text and its JSON-schema bounds."""
    assert section in SECTIONS, section
    return dataclasses.field(
        default=default, metadata={"description": description, "section": section, "title": title, "schema": schema}
    )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One pipeline run for one ManiSkill task. Field defaults are the production profile's."""

    env_id: str = _opt(
        "PickCube-v1",
        "ManiSkill task (registered in tasks/core/specs.py)",
        "Task and demos",
        "Task",
        enum=sorted(TASK_SPECS),
    )
    demo_source: str = _opt(
        "motionplanning",
        "motionplanning: generate offline with ManiSkill's planner; hub: ManiSkill's "
        "download_demo; s3: a mirrored demo folder (demo_source_uri)",
        "Task and demos",
        "Demo source",
        enum=list(DEMO_SOURCES),
    )
    demo_source_uri: str | None = _opt(
        None, "for demo_source=s3: folder with trajectory.h5 and .json", "Task and demos", "Demo folder (s3)"
    )
    demo_count: int = _opt(
        200, "demos used for training", "Task and demos", "Training demos", minimum=1, maximum=100_000
    )
    holdout_count: int = _opt(
        20,
        "demos kept out of training (the first ones of the demo set), for verify's held-out frames",
        "Task and demos",
        "Held-out demos",
        minimum=1,
        maximum=10_000,
    )
    seed: int = _opt(
        0, "first motion-planning seed; also the training seed", "Task and demos", "Seed", minimum=0, maximum=2**31 - 1
    )
    control_mode: str = _opt(
        FROM_SPEC,
        "control mode the demos are replayed into and the policy acts in: the TaskSpec's "
        "(another value is refused: edit the spec instead, every stage reads it)",
        "Render",
        "Control mode",
        enum=[FROM_SPEC, *CONTROL_MODES],
        values_display={FROM_SPEC: "the task's (from its TaskSpec)"},
    )
    episodes_per_shard: int = _opt(
        50,
        "render shard size: large demo sets render in parallel shards",
        "Render",
        "Episodes per render shard",
        minimum=1,
        maximum=10_000,
    )
    min_success_ratio: float = _opt(
        0.8,
        "render fails when fewer replays succeed than this",
        "Render",
        "Minimum replay success ratio",
        minimum=0,
        maximum=1,
    )
    camera_size: int = _opt(
        224,
        "square camera resolution to render at, in pixels; pi0 takes 224x224 images (openpi "
        "resizes with padding), so 224 keeps every rendered pixel; 0: the task's own default "
        "(128x128 for most ManiSkill tasks). Recorded in the dataset; evaluation renders alike",
        "Render",
        "Camera resolution",
        minimum=0,
        maximum=1024,
    )
    model: str = _opt(
        "pi0",
        "openpi model family: pi0 (flow matching, z-score normalisation) or pi05 (pi0.5: state "
        "as discrete prompt tokens, adaRMS time conditioning, quantile normalisation from the stats' "
        "q01/q99); each has the tiny, lora and full presets and starts from its own base checkpoint",
        "Training",
        "Model family",
        enum=list(MODELS),
        values_display={"pi0": "pi0", "pi05": "pi0.5"},
    )
    preset: str = _opt(
        "lora",
        "lora: gemma_2b_lora + gemma_300m_lora from pretrained weights (openpi's low-memory "
        "fine-tune); full: full fine-tune with EMA; tiny: CPU-sized pi0 for tests and the demo",
        "Training",
        "Preset",
        enum=list(PRESETS),
    )
    pretrained_uri: str | None = _opt(
        BASE,
        "initial weights: 'base' (the model family's released checkpoint: "
        "gs://openpi-assets/checkpoints/pi0_base/params or pi05_base/params), openpi "
        "params elsewhere (gs://..., s3://..., /path), a train artifact URI of this store, "
        "or 'latest' (the task's promoted checkpoint). Required by lora",
        "Training",
        "Initial weights",
        pattern=r"^(base|latest|(gs|s3|file)://\S+|/\S+)$",
    )
    from_scratch: bool = _opt(
        False,
        "full preset only: train from random initialisation (no pretrained_uri); a "
        "deliberate choice, reported as 'from scratch'",
        "Training",
        "Full fine-tune from scratch",
    )
    steps: int | None = _opt(
        None,
        "training steps; empty: for lora/full about 30 passes over the training frames (2000..30000, in "
        "thousands; openpi's ALOHA sim recipe makes ~32), for tiny the preset's",
        "Training",
        "Training steps",
        minimum=1,
        maximum=10_000_000,
    )
    batch_size: int | None = _opt(
        None,
        "global batch size; empty: the preset's (32 for lora/full)",
        "Training",
        "Batch size",
        minimum=1,
        maximum=4096,
    )
    learning_rate: float | None = _opt(
        None,
        "peak learning rate; empty: the preset's (2.5e-5 for lora/full)",
        "Training",
        "Peak learning rate",
        exclusiveMinimum=0,
        maximum=1,
    )
    action_horizon: int = _opt(10, "pi0 action chunk length", "Training", "Action horizon", minimum=1, maximum=256)
    save_interval: int = _opt(
        1000,
        "checkpoint (resume point) every N steps; 0: only at the end",
        "Training",
        "Checkpoint every N steps",
        minimum=0,
        maximum=10_000_000,
    )
    keep_period: int | None = _opt(
        None,
        "also keep the checkpoint of every N-th step (openpi's keep_period) and verify each "
        "of them: the one with the most closed-loop successes (ties: lower validation loss) is "
        "the candidate for promotion; empty: about a sixth of the run, in multiples of the validation "
        "interval (openpi keeps every 5000th of 30000); 0: only the final checkpoint. Each kept checkpoint "
        "costs one verify and its params in the store (about 6 GB for pi0 lora)",
        "Training",
        "Keep and evaluate a checkpoint every N steps",
        minimum=0,
        maximum=10_000_000,
    )
    log_interval: int = _opt(
        100,
        "bring loss and grad norm to the host and log them every N steps",
        "Training",
        "Log every N steps",
        minimum=1,
        maximum=100_000,
    )
    num_workers: int = _opt(
        2,
        "data-loader worker processes (they load the next batch while a step runs)",
        "Training",
        "Data-loader workers",
        minimum=0,
        maximum=64,
    )
    val_interval: int = _opt(
        1000,
        "loss on the held-out demos every N steps (and at the end), beside the training loss; 0: off",
        "Training",
        "Validation loss every N steps",
        minimum=0,
        maximum=10_000_000,
    )
    val_batches: int = _opt(
        4,
        "held-out batches per validation (the same ones each time)",
        "Training",
        "Validation batches",
        minimum=1,
        maximum=1000,
    )
    fsdp_devices: int = _opt(
        1,
        "openpi's fsdp_devices: shard weights and optimizer state over this many GPUs of the "
        "worker (must divide its GPU count); 1: each GPU holds a full copy (data parallel). lora "
        "needs >= 22.5 GB per copy, full >= 70 GB: use 2+ for full on 40-48 GB GPUs",
        "Training",
        "FSDP devices",
        minimum=1,
        maximum=512,
    )
    xla_mem_fraction: float = _opt(
        0.9, "XLA_PYTHON_CLIENT_MEM_FRACTION for training", "Training", "GPU memory fraction", minimum=0.05, maximum=1
    )
    wandb: bool = _opt(
        True,
        "log training to Weights & Biases (offline, published in the train artifact, unless a "
        "connection or WANDB_MODE=online says otherwise)",
        "Training",
        "Weights & Biases",
    )
    eval_episodes: int = _opt(
        50, "closed-loop evaluation episodes", "Evaluation", "Closed-loop episodes", minimum=0, maximum=10_000
    )
    eval_envs: int = _opt(
        0,
        "closed-loop envs stepped together, each in a worker process, with one batched policy "
        "call per replanning step; 0: one per CPU core of the worker (at most 8), one below 4 "
        "episodes. Does not change what is measured (same seeds, same protocol; only the policy's noise "
        "draws depend on the batching)",
        "Evaluation",
        "Parallel eval envs",
        minimum=0,
        maximum=64,
    )
    eval_max_steps: int | None = _opt(
        None,
        "closed-loop step limit per episode; empty: the longest training episode "
        "(after control-mode conversion) plus 15 %",
        "Evaluation",
        "Step limit",
        minimum=1,
        maximum=100_000,
    )
    holdout_frames: int = _opt(
        64, "held-out frames for the open-loop checks", "Evaluation", "Held-out frames", minimum=1, maximum=10_000
    )
    min_success_rate: float = _opt(
        0.2,
        "verify's verdict is 'failed' below this closed-loop success rate (success_once); "
        "0: not judged, the verdict is 'unchecked' and nothing is promoted",
        "Evaluation",
        "Minimum success rate",
        minimum=0,
        maximum=1,
    )
    require_approval: bool = _opt(
        False,
        "a person approves (Airflow's Required Actions page) before latest moves; "
        "asked only when the promotion rule would promote the candidate. A deployment "
        "with PIPELINE_REQUIRE_APPROVAL=1 requires it of every run, whatever this says",
        "Evaluation",
        "Require approval",
    )
    approval_timeout_hours: float = _opt(
        72.0,
        "how long the approval waits; no answer counts as a rejection",
        "Evaluation",
        "Approval timeout (hours)",
        minimum=0.01,
        maximum=24 * 90,
    )
    artifact_root: str = _opt(
        "",
        "where artifacts go: file:///abs/dir (embedded) or s3://bucket/prefix",
        "Storage and accounts",
        "Artifact root",
        pattern=r"^(file:///|s3://)[A-Za-z0-9._/-]+$",
    )
    s3_conn_id: str | None = _opt(
        None,
        "Airflow aws connection for s3:// roots (endpoint_url in its extra for MinIO); "
        "empty: the worker's AWS environment",
        "Storage and accounts",
        "S3 connection",
    )
    wandb_conn_id: str | None = _opt(
        None,
        "Airflow connection holding the W&B API key (password; host for self-hosted "
        "W&B; extra mode/entity); empty: W&B reads WANDB_API_KEY from the environment",
        "Storage and accounts",
        "W&B connection",
    )
    # Which profile supplied the defaults: recorded with the run, not a form field.
    profile: str = dataclasses.field(default="production", metadata={"internal": True})

    # ---- building ---------------------------------------------------------------------------------------------------
    @classmethod
    def settings(cls) -> tuple[dataclasses.Field, ...]:
        """The fields a user sets (the params form, conf keys)."""
        return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.settings())

    @classmethod
    def json_schema(cls) -> dict[str, dict[str, Any]]:
        """Each setting's JSON schema (type, bounds, choices): the Airflow form and `validate` both use it."""
        hints = _hints()
        out = {}
        for f in cls.settings():
            args = typing.get_args(hints[f.name])
            base = next((a for a in args if a is not type(None)), hints[f.name])
            json_type = _JSON_TYPES[base]
            # optional settings allow null: Airflow counts a field whose type excludes null as required
            out[f.name] = {**f.metadata["schema"], "type": [json_type, "null"] if type(None) in args else json_type}
        return out

    @classmethod
    def defaults(cls, profile: str | None = None) -> dict[str, Any]:
        """The settings' defaults under a profile (the deployment's when not given)."""
        profile = profile or active_profile()
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)} (set {PROFILE_ENV})")
        values = {f.name: f.default for f in cls.settings()}
        from tasks.core.cli import default_root

        values.update(
            artifact_root=default_root(),
            s3_conn_id=os.environ.get("PIPELINE_S3_CONN_ID") or None,
            wandb_conn_id=os.environ.get("PIPELINE_WANDB_CONN_ID") or None,
            require_approval=deployment_requires_approval(),
        )
        if profile == "demo":
            values.update(DEMO_PROFILE)
        return values

    @classmethod
    def build(
        cls,
        values: Mapping[str, Any] | None = None,
        *,
        profile: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> RunConfig:
        """The profile's defaults, then `values` (e.g. the DAG's params), then `overrides` (a trigger's conf);
        unknown keys refused, types coerced, everything validated."""
        profile = profile or active_profile()
        merged = cls.defaults(profile)
        for source in (values or {}), (overrides or {}):
            check_keys(source, cls.setting_names(), "run setting")
            merged.update(source)
        config = cls(
            **{name: _coerce(name, hint, merged[name]) for name, hint in _hints().items() if name in merged},
            profile=profile,
        )
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """A config that `build` made and `to_dict` serialised (e.g. through XCom)."""
        config = cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})
        config.validate()
        return config

    # ---- validation -------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        spec = get_spec(self.env_id)
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}: use one of {', '.join(PROFILES)}")
        if self.control_mode not in (FROM_SPEC, spec.control_mode):
            raise ConfigError(
                f"control_mode {self.control_mode!r} contradicts the TaskSpec of {self.env_id} ({spec.control_mode!r}): "
                f"every stage (render, training, evaluation) uses the spec's control mode, so set control_mode to "
                f"{FROM_SPEC!r} (the form's default) or change control_mode in tasks/core/specs.py"
            )
        from tasks.core.store import ArtifactError, ArtifactStore

        try:
            ArtifactStore.validate_root(self.artifact_root)
        except ArtifactError as e:
            raise ConfigError(f"artifact_root: {e}") from None
        import jsonschema

        for name, schema in self.json_schema().items():
            if name == "env_id":
                continue  # get_spec checked it against the registry as it is now, not as it was at import
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(schema).iter_errors(getattr(self, name))
            )
            if error is not None:
                raise ConfigError(f"{name}: {error.message}")
        if self.keep_period and self.val_interval and self.keep_period % self.val_interval:
            raise ConfigError(
                f"keep_period={self.keep_period} is not a multiple of val_interval={self.val_interval}: the "
                "kept checkpoints would have no validation loss to break ties between equal success "
                "rates. Use a multiple (openpi's keep_period 5000 with val_interval 1000), or val_interval=0"
            )
        if self.holdout_count >= self.demo_count:
            raise ConfigError(
                f"holdout_count={self.holdout_count} is not below demo_count={self.demo_count}: as many demos or "
                "more would be planned and rendered for the held-out checks as for training (a swapped pair of "
                "numbers, most likely). Raise demo_count or lower holdout_count"
            )
        if self.min_success_rate and not self.eval_episodes:
            raise ConfigError(
                f"min_success_rate={self.min_success_rate} with eval_episodes=0: no closed-loop episode would be "
                "played, so the threshold could never be checked. Set eval_episodes (50 gives about +-14 points) "
                "or min_success_rate=0"
            )
        # every stage's own checks, before any work starts
        self.download_params().validate()
        self.render_params().validate()
        self.convert_params().validate()
        self.stats_params().validate()
        self.train_params().validate()
        self.verify_params().validate()

    # ---- the stages' params -----------------------------------------------------------------------------------------
    def download_params(self):
        return DownloadParams(
            env_id=self.env_id,
            source=self.demo_source,
            count=self.demo_count + self.holdout_count,
            seed=self.seed,
            source_uri=self.demo_source_uri or "",
        )

    def render_params(self, shard_start: int = 0, shard_stop: int = -1):
        mode = "" if self.control_mode == FROM_SPEC else self.control_mode
        return RenderParams(
            env_id=self.env_id,
            control_mode=mode,
            shard_start=shard_start,
            shard_stop=shard_stop,
            min_success_ratio=self.min_success_ratio,
            camera_size=self.camera_size,
        )

    def convert_params(self):
        return ConvertParams(env_id=self.env_id)

    def stats_params(self):
        return StatsParams(env_id=self.env_id, action_horizon=self.action_horizon)

    def train_params(self):
        return TrainParams(
            env_id=self.env_id,
            model=self.model,
            preset=self.preset,
            steps=self.steps or 0,
            batch_size=self.batch_size or 0,
            learning_rate=self.learning_rate or 0.0,
            action_horizon=self.action_horizon,
            save_interval=self.save_interval,
            keep_period=AUTO_KEEP if self.keep_period is None else self.keep_period,
            seed=self.seed,
            pretrained_uri=self.pretrained_uri or "",
            from_scratch=self.from_scratch,
            log_interval=self.log_interval,
            num_workers=self.num_workers,
            wandb=self.wandb,
            xla_mem_fraction=self.xla_mem_fraction,
            val_interval=self.val_interval,
            val_batches=self.val_batches,
            fsdp_devices=self.fsdp_devices,
        )

    def verify_params(self, selection: bool = False):
        """verify's params; `selection`: for scoring one of several kept checkpoints (its own seeds, no harness check;
        the chosen one is then verified with the plain params)."""
        return VerifyParams(
            env_id=self.env_id,
            holdout_frames=self.holdout_frames,
            episodes=self.eval_episodes,
            envs=self.eval_envs,
            max_steps=self.eval_max_steps or 0,
            seed=self.seed + (SELECTION_SEED_OFFSET if selection else 0),
            harness=not selection,
            min_success_rate=self.min_success_rate,
        )

    def promote_params(self, actor: str = "", approved_by: str = "", rejected_by: str = ""):
        # The deployment's rule cannot be switched off by a run's conf.
        return PromoteParams(
            env_id=self.env_id,
            actor=actor,
            require_approval=self.require_approval or deployment_requires_approval(),
            approved_by=approved_by,
            rejected_by=rejected_by,
        )


# The demo profile: what differs from production, and why (CPU, minutes, no pretrained weights here).
DEMO_PROFILE: dict[str, Any] = {
    "preset": "tiny",  # dummy gemma variants: trains on a CPU in about a minute
    "pretrained_uri": None,  # no released checkpoint fits the tiny model; it starts from scratch
    "steps": 4,
    "batch_size": 1,
    "save_interval": 0,
    "log_interval": 1,
    "num_workers": 0,  # a handful of steps: one checkpoint, every loss logged
    "keep_period": 0,  # one checkpoint to verify: the demo's policy is not judged anyway
    "wandb": False,
    "demo_count": 4,
    "holdout_count": 1,
    "val_interval": 2,
    "val_batches": 1,
    "camera_size": 0,  # ManiSkill's 128x128: rendering and inference on CPU stay fast (the tiny model resizes anyway)
    # 2 short episodes of an untrained tiny model: success is not judged (verdict 'unchecked', nothing promoted).
    "eval_episodes": 2,
    "eval_max_steps": 40,
    "holdout_frames": 4,
    "min_success_rate": 0.0,
}


def deployment_requires_approval() -> bool:
    """PIPELINE_REQUIRE_APPROVAL=1: every promotion of this deployment waits for a person."""
    return os.environ.get("PIPELINE_REQUIRE_APPROVAL", "").strip().lower() in ("1", "true", "yes")


def active_profile() -> str:
    profile = os.environ.get(PROFILE_ENV, "production").strip() or "production"
    if profile not in PROFILES:
        raise ConfigError(f"{PROFILE_ENV}={profile!r} is not a profile: use one of {', '.join(PROFILES)}")
    return profile


def check_keys(values: Mapping[str, Any], known: tuple[str, ...] | list[str], what: str) -> None:
    """Refuses keys that are not settings, naming the closest valid one."""
    unknown = sorted(set(values) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise ConfigError(
        f"unknown {what}{'s' if len(unknown) > 1 else ''}: {', '.join(hints)}. Valid names: {', '.join(sorted(known))}"
    )


def asset_overrides(asset_events: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a demos asset event's `extra` carries; unknown keys refused."""
    overrides: dict[str, Any] = {}
    for events in (asset_events or {}).values():
        for event in events:
            extra = dict(getattr(event, "extra", None) or {})
            check_keys(extra, ASSET_OVERRIDES, "key in the demos asset event's extra")
            overrides.update(extra)
    return overrides


def _hints() -> dict[str, Any]:
    return {name: hint for name, hint in typing.get_type_hints(RunConfig).items() if name != "profile"}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Form values arrive as JSON: ints may come as floats, cleared optional fields as "" or None."""
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{name} must be set (it has no 'empty' meaning)")
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if base is int:
            if isinstance(value, bool):  # int(True) == 1: a "true" where a count is asked is a mistake, not a 1
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a valid {base.__name__}") from None
