"""A trained checkpoint as an openpi policy, through openpi's own loader and the train config that trained it."""

from __future__ import annotations

from pathlib import Path

from tasks.core.checks import check_vision_tower
from tasks.core.params import PRESET_DEFAULTS
from tasks.core.specs import TaskSpec
from tasks.core.store import Manifest


class PolicyLoadError(ValueError):
    """The checkpoint cannot be loaded as it was trained; the message names the fix."""


def load_policy(spec: TaskSpec, train_manifest: Manifest, checkpoint_dir: Path):
    """The trained policy through openpi's own loader, with the TrainConfig that trained it."""
    from openpi.policies import policy_config

    from tasks.policy.configs import for_task
    from tasks.policy.tokenizer import ensure_tokenizer, is_offline_stand_in

    ensure_tokenizer()
    p = train_manifest.params
    if p["preset"] != "tiny" and is_offline_stand_in():
        raise PolicyLoadError(
            f"{train_manifest.uri} is a {p['preset']} checkpoint, but openpi's tokenizer cache holds the "
            "offline stand-in: point OPENPI_DATA_HOME at a cache with the real PaliGemma tokenizer"
        )
    check_vision_tower(
        train_manifest.uri,
        train_manifest.metrics,
        PRESET_DEFAULTS[p["preset"]].vision_tower,
        f"the {p['preset']} preset",
        PolicyLoadError,
    )
    config = for_task(
        spec.env_id,
        p["preset"],
        model=p.get("model", "pi0"),
        action_horizon=p["action_horizon"],
        assets_dir=checkpoint_dir / "assets",
    )
    return policy_config.create_trained_policy(config, checkpoint_dir, default_prompt=spec.prompt), config
