"""The sibling TrainConfig registry: one openpi TrainConfig per (task, preset), built from the TaskSpec."""

import flax.nnx as nnx
import pytest
from openpi.models import pi0_config

from tasks.core.specs import TASK_SPECS
from tasks.policy.configs import MODELS, PRESETS, ConfigError, config_name, for_task, get_config, registry


def test_every_task_has_every_preset():
    configs = registry()
    assert set(configs) == {config_name(e, p, m) for e in TASK_SPECS for m in MODELS for p in PRESETS}
    for name, config in configs.items():
        assert config.name == name
        assert config.data.assets.asset_id == config.data.spec.env_id


def test_lora_freeze_filter_is_built_from_the_same_model_config():
    config = get_config("pi0_lora_pickcube_v1")
    assert config.model.paligemma_variant == "gemma_2b_lora" and config.model.action_expert_variant == "gemma_300m_lora"
    expected = pi0_config.Pi0Config(
        paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora"
    ).get_freeze_filter()
    assert repr(config.freeze_filter) == repr(expected)
    assert config.ema_decay is None


def test_tiny_preset_is_small_and_trains_from_scratch():
    config = for_task("PickCube-v1", "tiny", action_horizon=8)
    assert config.model.paligemma_variant == "dummy" and config.model.action_expert_variant == "dummy"
    assert config.model.action_horizon == 8 and config.ema_decay is None
    assert config.model.vision_variant == "mu/28"  # the small SigLIP tower (tests/tasks/policy/test_tiny_model.py)
    assert isinstance(config.freeze_filter, nnx.filterlib.Nothing)  # every weight trains, the tower too
    assert type(config.weight_loader).__name__ == "NoOpWeightLoader"


def test_registry_configs_start_from_pi0_base_like_openpis():
    assert (
        get_config("pi0_lora_pickcube_v1").weight_loader.params_path == "gs://openpi-assets/checkpoints/pi0_base/params"
    )
    assert type(get_config("pi0_tiny_pickcube_v1").weight_loader).__name__ == "NoOpWeightLoader"


def test_pretrained_uri_uses_openpi_checkpoint_loader():
    config = for_task("PickCube-v1", "lora", pretrained_uri="gs://openpi-assets/checkpoints/pi0_base/params")
    assert type(config.weight_loader).__name__ == "CheckpointWeightLoader"
    assert config.weight_loader.params_path == "gs://openpi-assets/checkpoints/pi0_base/params"


def test_bad_requests_are_refused():
    with pytest.raises(ConfigError, match="unknown preset"):
        for_task("PickCube-v1", "huge")
    # the tiny preset takes a params directory (a warm start from a tiny checkpoint); gs:// is refused by TrainParams
    assert for_task("PickCube-v1", "tiny", pretrained_uri="/weights").weight_loader.params_path == "/weights"
    with pytest.raises(ConfigError, match="unknown train config"):
        get_config("pi0_nope")


def test_the_compilation_cache_is_only_enabled_where_cached_executables_sample_correctly(tmp_path, caplog):
    """JAX 0.5.3 on the CPU: executables loaded from the persistent cache return a constant from jax.random.beta,
    which would train pi0 at a single flow-matching time. The train stage checks and leaves the cache off."""
    import jax

    from tasks.train import enable_compilation_cache

    with caplog.at_level("INFO", logger="tasks.train"):
        enabled = enable_compilation_cache(tmp_path / "jax-cache")
    if jax.default_backend() == "cpu":
        assert not enabled and "left off" in caplog.text
        assert jax.config.jax_compilation_cache_dir != str(tmp_path / "jax-cache")
    else:
        assert enabled == (jax.config.jax_compilation_cache_dir == str(tmp_path / "jax-cache"))


def test_pi05_configs_follow_openpis_pi05_family():
    """pi0.5 as openpi builds it: pi05=True, state as discrete prompt tokens, 200 tokens, quantile normalisation,
    pi05_base weights for the real presets, openpi's default EMA for full."""
    from tasks.policy.configs import uses_quantile_norm

    lora = get_config("pi05_lora_pickcube_v1")
    assert lora.model.pi05 and lora.model.discrete_state_input and lora.model.max_token_len == 200
    assert lora.weight_loader.params_path == "gs://openpi-assets/checkpoints/pi05_base/params"
    expected = pi0_config.Pi0Config(
        pi05=True, paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora"
    ).get_freeze_filter()
    assert repr(lora.freeze_filter) == repr(expected) and lora.ema_decay is None
    assert get_config("pi05_full_pickcube_v1").ema_decay == 0.99 == get_config("pi0_full_pickcube_v1").ema_decay
    tiny = for_task("PickCube-v1", "tiny", model="pi05")
    assert tiny.model.pi05 and tiny.model.paligemma_variant == "dummy" and tiny.name == "pi05_tiny_pickcube_v1"
    assert uses_quantile_norm(tiny.model) and not uses_quantile_norm(for_task("PickCube-v1", "tiny").model)
    with pytest.raises(ConfigError, match="unknown model 'pi0_fast'"):
        for_task("PickCube-v1", "tiny", model="pi0_fast")


def test_pi05_data_config_normalises_by_quantiles_from_our_stats(tmp_path):
    """openpi's own DataConfigFactory picks quantile normalisation for pi0.5 and reads our norm_stats.json."""
    import numpy as np
    from openpi.shared import normalize

    from tasks.core.specs import get_spec

    spec = get_spec("PickCube-v1")
    stats = {
        k: normalize.NormStats(mean=np.zeros(w), std=np.ones(w), q01=-np.ones(w), q99=np.ones(w))
        for k, w in (("state", spec.state_dim), ("actions", spec.action_dim))
    }
    normalize.save(tmp_path / spec.env_id, stats)
    for model, quantile in (("pi05", True), ("pi0", False)):
        config = for_task(spec.env_id, "tiny", model=model, assets_dir=tmp_path)
        data = config.data.create(config.assets_dirs, config.model)
        assert data.use_quantile_norm is quantile
        np.testing.assert_array_equal(data.norm_stats["state"].q99, np.ones(spec.state_dim))


def test_quantile_normalisation_refuses_moving_action_dims_whose_percentiles_coincide(tmp_path):
    """pi0.5's quantile Normalize divides by q99 - q01 unclipped: an action dimension that moves on under 2 % of the
    frames is refused, named, before training; one constant on every frame is fine; pi0 (z-score) is not affected."""
    import numpy as np
    from openpi.shared import normalize

    from tasks.core.specs import get_spec
    from tasks.train import TrainError, check_norm_stats

    spec = get_spec("PickCube-v1")
    state = normalize.NormStats(
        mean=np.zeros(spec.state_dim),
        std=np.ones(spec.state_dim),
        q01=-np.ones(spec.state_dim),
        q99=np.ones(spec.state_dim),
    )

    def actions(moving_dim_collapsed: bool) -> normalize.NormStats:
        q01, q99, std = -np.ones(7), np.ones(7), np.ones(7)
        q01[6] = q99[6] = 1.0
        std[6] = 0.0  # the gripper closed on every frame: constant, maps to -1 and back
        if moving_dim_collapsed:
            q01[3] = q99[3] = 0.0  # moves on a few frames only: std > 0, percentiles equal
        return normalize.NormStats(mean=np.zeros(7), std=std, q01=q01, q99=q99)

    normalize.save(tmp_path / "ok", {"state": state, "actions": actions(False)})
    check_norm_stats(spec, tmp_path / "ok", 32, quantile=True)
    normalize.save(tmp_path / "bad", {"state": state, "actions": actions(True)})
    check_norm_stats(spec, tmp_path / "bad", 32, quantile=False)
    with pytest.raises(TrainError, match=r"action\[3\] \(q99-q01 0"):
        check_norm_stats(spec, tmp_path / "bad", 32, quantile=True)
