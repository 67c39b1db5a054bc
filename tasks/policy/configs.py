"""A sibling registry of openpi `TrainConfig`s, one per (task spec, model family, preset).

openpi keeps its configs in a closed list (`openpi.training.config._CONFIGS`) with no plugin API, so we
neither fork nor patch it: `train_config(spec, preset, ...)` builds an ordinary `TrainConfig` from a
`TaskSpec` and openpi's own model configs, and the same object drives training (tasks/train.py), norm
stats (the data config loads them) and inference (`policy_config.create_trained_policy` in verify).

Model families (`model`), as openpi builds them:
- `pi0`: `Pi0Config()`; state is a continuous input of the action expert; z-score normalisation (mean/std).
- `pi05` (pi0.5): `Pi0Config(pi05=True)`: the state goes into the prompt as 256-bin tokens (openpi's
  `discrete_state_input`, its default for pi0.5; openpi's pi05_libero turns it off, which leaves pi0.5
  without any state input, while ManiSkill tasks keep goals such as PickCube's in the state), the action expert is conditioned on the
  flow-matching time by adaRMSNorm, 200 prompt tokens, and openpi's data config switches to quantile
  normalisation (q01/q99 of the stats artifact) for it, as for every non-pi0 family. Base: pi05_base; the
  full preset keeps openpi's default EMA of 0.99 (as pi05_droid and pi05_aloha do; only pi05_libero, with
  batch 256 and a long schedule, uses 0.999).
- pi0-FAST is not offered: openpi's `gemma_fast` has only 2B variants, so no tiny preset can test it here.

Presets:
- `lora`: pi0 with `gemma_2b_lora` + `gemma_300m_lora`, the freeze filter built from that same model
  config (what openpi's `pi0_libero_low_mem_finetune` does), no EMA. Fits a 24 GB+ GPU at batch 32.
- `full`: full fine-tune of pi0 with EMA (needs ~70 GB+ of GPU memory at batch 32).
- `tiny`: for CPU tests and the offline demo. openpi's `dummy` gemma variants (width 64), a small SigLIP tower
  (`mu/28`, tasks/policy/tiny_model.py: openpi's pi0 hard-codes So400m/14, which made a training step cost seconds
  on a CPU), every weight trained, float32, no EMA; from scratch, or warm-started from an earlier tiny train
  artifact. It exercises every code path of the real presets at a size CI can run, fast enough to learn.

Initial weights are a params directory loaded by openpi's `CheckpointWeightLoader`: `pi0_base`
(`gs://openpi-assets/checkpoints/pi0_base/params`, the production default), a copy of it, or the params of
an earlier train artifact (any preset, tiny included: that is a warm start). The train stage resolves
artifact URIs and `latest` to a local params directory before building the config.
"""

from __future__ import annotations

from pathlib import Path

import flax.nnx as nnx
from openpi.models import pi0_config
from openpi.training import config as _config
from openpi.training import optimizer as _optimizer
from openpi.training import weight_loaders

# pi0 pads state and actions to MODEL_ACTION_DIM; tasks/core/checks.py refuses anything wider (here, stats, train).
from tasks.core.checks import MODEL_ACTION_DIM, check_fits_model, model_input_widths
from tasks.core.params import BASE_PARAMS, MODELS, PRESET_DEFAULTS, PRESETS, lr_schedule
from tasks.core.specs import TASK_SPECS, TaskSpec, get_spec
from tasks.policy.tiny_model import DEFAULT_VISION_VARIANT, SmallTowerPi0Config
from tasks.policy.transforms import ManiSkillDataConfig


class ConfigError(ValueError):
    """A train config request that cannot work (unknown preset, bad sizes)."""


def model_config(preset: str, action_horizon: int, model: str = "pi0") -> pi0_config.Pi0Config:
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    family = {"pi05": model == "pi05", "action_horizon": action_horizon, "action_dim": MODEL_ACTION_DIM}
    if preset == "tiny":
        # float32 activations: XLA on CPU has no fast bfloat16 matmul, and the tiny model is small anyway.
        return SmallTowerPi0Config(
            paligemma_variant="dummy",
            action_expert_variant="dummy",
            dtype="float32",
            vision_variant=PRESET_DEFAULTS["tiny"].vision_tower,
            **family,
        )
    assert PRESET_DEFAULTS[preset].vision_tower == DEFAULT_VISION_VARIANT, "lora and full keep openpi's own model"
    if preset == "lora":
        return pi0_config.Pi0Config(
            paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora", **family
        )
    if preset == "full":
        return pi0_config.Pi0Config(**family)
    raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")


def uses_quantile_norm(model: pi0_config.Pi0Config) -> bool:
    """What openpi's DataConfigFactory decides for this model (quantile for every family but pi0)."""
    from openpi.models import model as _model

    return model.model_type != _model.ModelType.PI0


def freeze_filter(preset: str, model: pi0_config.Pi0Config):
    if preset == "tiny":
        # Everything trains: the small tower costs 0.39 s a step at batch 8 trained against 0.33 s frozen, and a frozen
        # random tower would limit what the policy can see.
        return nnx.Nothing()
    return model.get_freeze_filter()  # LoRA: everything but the adapters; full: nothing


def config_name(env_id: str, preset: str, model: str = "pi0") -> str:
    return f"{model}_{preset}_{env_id.lower().replace('-', '_')}"


def train_config(
    spec: TaskSpec,
    preset: str,
    *,
    model: str = "pi0",
    repo_id: str = "maniskill/unset",
    assets_dir: str | Path | None = None,
    checkpoint_base_dir: str | Path = "./checkpoints",
    exp_name: str = "run",
    action_horizon: int = 10,
    batch_size: int | None = None,
    num_train_steps: int | None = None,
    peak_lr: float | None = None,
    pretrained_uri: str = "",
    seed: int = 42,
    save_interval: int = 1000,
    log_interval: int = 1,
    num_workers: int = 0,
    wandb_enabled: bool = False,
    wandb_project: str = "maniskill-openpi",
    fsdp_devices: int = 1,
) -> _config.TrainConfig:
    """The openpi TrainConfig for one task and preset. Norm stats are read from `<assets_dir>/<env_id>/`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    check_fits_model(spec.env_id, model_input_widths(spec), MODEL_ACTION_DIM, error=ConfigError)
    defaults = PRESET_DEFAULTS[preset]
    steps = num_train_steps or defaults.num_train_steps
    family = model
    model = model_config(preset, action_horizon, family)
    schedule = lr_schedule(preset, steps, peak_lr or 0.0)
    return _config.TrainConfig(
        name=config_name(spec.env_id, preset, family),
        project_name=wandb_project,
        exp_name=exp_name,
        model=model,
        weight_loader=(
            weight_loaders.CheckpointWeightLoader(pretrained_uri)
            if pretrained_uri
            else weight_loaders.NoOpWeightLoader()
        ),
        lr_schedule=_optimizer.CosineDecaySchedule(
            warmup_steps=schedule.warmup_steps,
            peak_lr=schedule.peak_lr,
            decay_steps=schedule.decay_steps,
            decay_lr=schedule.decay_lr,
        ),
        optimizer=_optimizer.AdamW(clip_gradient_norm=1.0),
        ema_decay=0.99 if preset == "full" else None,  # openpi's default for both families (pi05_libero alone: 0.999)
        freeze_filter=freeze_filter(preset, model),
        data=ManiSkillDataConfig(
            repo_id=repo_id,
            assets=_config.AssetsConfig(assets_dir=str(assets_dir) if assets_dir else None, asset_id=spec.env_id),
            spec=spec,
        ),
        assets_base_dir=str(assets_dir) if assets_dir else "./assets",
        checkpoint_base_dir=str(checkpoint_base_dir),
        seed=seed,
        batch_size=batch_size or defaults.batch_size,
        num_workers=num_workers,
        num_train_steps=steps,
        log_interval=log_interval,
        save_interval=save_interval,
        keep_period=None,
        wandb_enabled=wandb_enabled,
        fsdp_devices=fsdp_devices,
        policy_metadata={
            "env_id": spec.env_id,
            "model": family,
            "control_mode": spec.control_mode,
            "action_dim": spec.action_dim,
        },
    )


def registry() -> dict[str, _config.TrainConfig]:
    """Every (registered task, model, preset) config with its defaults, by name — the sibling of openpi's `_CONFIGS`.

    Like openpi's own fine-tuning configs, lora and full start from their family's base checkpoint; tiny from scratch.
    """
    return {
        config_name(env_id, preset, model): train_config(
            spec, preset, model=model, pretrained_uri="" if preset == "tiny" else BASE_PARAMS[model]
        )
        for env_id, spec in TASK_SPECS.items()
        for model in MODELS
        for preset in PRESETS
    }


def get_config(name: str) -> _config.TrainConfig:
    configs = registry()
    if name not in configs:
        raise ConfigError(f"unknown train config {name!r}; known: {', '.join(sorted(configs))}")
    return configs[name]


def for_task(env_id: str, preset: str, **overrides) -> _config.TrainConfig:
    return train_config(get_spec(env_id), preset, **overrides)
