"""The run configuration: profiles, one place for defaults, refusals before any work (no Airflow, no sim)."""

import dataclasses

import pytest

from tasks.core.params import BASE, PI0_BASE_PARAMS, PI05_BASE_PARAMS
from tasks.core.run_config import DEMO_PROFILE, ConfigError, RunConfig, asset_overrides
from tasks.train import TrainError, openpi_train_config


def test_production_profile_is_openpis_lora_recipe_from_pi0_base():
    config = RunConfig.build(profile="production")
    assert config.preset == "lora" and config.pretrained_uri == BASE and config.profile == "production"
    assert config.model == "pi0" and config.train_params().weights_uri() == PI0_BASE_PARAMS
    assert config.demo_count >= 100 and config.holdout_count >= 10 and config.eval_episodes >= 50
    assert config.save_interval == 1000 and config.num_workers >= 1 and config.log_interval == 100
    # steps/batch/LR left to the preset reach openpi's own values in the TrainConfig that would train
    train = openpi_train_config(config.train_params())
    assert train.num_train_steps == 30_000 and train.batch_size == 32
    assert train.lr_schedule.peak_lr == 2.5e-5 and train.lr_schedule.warmup_steps == 1_000
    assert train.lr_schedule.decay_steps == 30_000 and train.ema_decay is None  # openpi's LoRA recipe: no EMA
    assert train.model.paligemma_variant == "gemma_2b_lora" and train.model.action_expert_variant == "gemma_300m_lora"
    assert (
        type(train.weight_loader).__name__ == "CheckpointWeightLoader"
        and train.weight_loader.params_path == PI0_BASE_PARAMS
    )
    assert train.save_interval == 1000 and train.num_workers == config.num_workers
    # the freeze filter is the LoRA model's own: the backbone frozen, the adapters trained
    assert train.freeze_filter == train.model.get_freeze_filter()


def test_full_preset_keeps_ema_and_an_explicit_step_count_wins():
    config = RunConfig.build({"preset": "full", "steps": 5000, "batch_size": 64}, profile="production")
    train = openpi_train_config(config.train_params())
    assert train.num_train_steps == 5000 and train.batch_size == 64 and train.ema_decay == 0.99


def test_fsdp_devices_reach_openpis_config_and_leave_the_key_alone():
    one = RunConfig.build({"preset": "full"}, profile="production")
    four = RunConfig.build({"preset": "full", "fsdp_devices": 4}, profile="production")
    assert openpi_train_config(one.train_params()).fsdp_devices == 1
    assert openpi_train_config(four.train_params()).fsdp_devices == 4
    # the same training sharded differently is the same artifact (resumable across GPU counts)
    assert four.train_params().key_params() == one.train_params().key_params()
    assert one.camera_size == 224 and RunConfig.build(profile="demo").camera_size == 0
    assert four.render_params().camera_size == 224
    with pytest.raises(ConfigError, match="fsdp_devices"):
        RunConfig.build({"fsdp_devices": 0}, profile="production")


def test_demo_profile_is_the_tiny_cpu_run():
    config = RunConfig.build(profile="demo")
    assert config.preset == "tiny" and config.pretrained_uri is None and config.profile == "demo"
    assert {k: getattr(config, k) for k in DEMO_PROFILE} == DEMO_PROFILE
    train = openpi_train_config(config.train_params())
    assert train.num_train_steps == 4 and train.batch_size == 1
    assert type(train.weight_loader).__name__ == "NoOpWeightLoader"


def test_unknown_keys_are_refused_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"'demo_cuont' \(did you mean 'demo_count'\?\)"):
        RunConfig.build({"demo_count": 3}, overrides={"demo_cuont": 8}, profile="demo")

    class Event:
        extra = {"env_id": "StackCube-v1", "demo_souce": "s3"}

    with pytest.raises(ConfigError, match=r"did you mean 'demo_source'"):
        asset_overrides({"maniskill_demos": [Event()]})


def test_lora_without_weights_is_refused_and_full_needs_from_scratch():
    with pytest.raises(TrainError, match="preset lora needs pretrained weights.*pi0_base"):
        RunConfig.build({"pretrained_uri": None}, profile="production")
    with pytest.raises(TrainError, match="from_scratch=true"):
        RunConfig.build({"preset": "full", "pretrained_uri": None}, profile="production")
    scratch = RunConfig.build({"preset": "full", "pretrained_uri": None, "from_scratch": True}, profile="production")
    assert type(openpi_train_config(scratch.train_params()).weight_loader).__name__ == "NoOpWeightLoader"
    with pytest.raises(TrainError, match="from_scratch applies"):
        RunConfig.build({"from_scratch": True}, profile="production")  # lora, with weights
    with pytest.raises(TrainError, match="match no released checkpoint"):
        RunConfig.build({"pretrained_uri": PI0_BASE_PARAMS}, profile="demo")  # tiny from pi0_base


def test_a_control_mode_that_contradicts_the_spec_is_refused():
    assert (
        RunConfig.build({"control_mode": "pd_ee_delta_pose"}, profile="demo")
        .render_params()
        .key_params()["control_mode"]
        == "pd_ee_delta_pose"
    )
    with pytest.raises(ConfigError, match="contradicts the TaskSpec of PickCube-v1"):
        RunConfig.build({"control_mode": "pd_joint_pos"}, profile="demo")


def test_bad_values_are_refused_with_the_setting_named():
    for values, message in (
        ({"demo_count": 0}, "demo_count: 0 is less than the minimum of 1"),
        ({"steps": 1.5}, "steps=1.5 is not a valid int"),
        ({"env_id": "NoSuchTask-v9"}, "unknown env id"),
        ({"preset": "huge"}, "preset: 'huge' is not one of"),
        ({"pretrained_uri": "weights here"}, "pretrained_uri: 'weights here' does not match"),
        ({"artifact_root": "relative/path"}, "artifact root"),
        ({"demo_source": "s3"}, "source_uri"),
    ):
        with pytest.raises(ValueError, match=message):
            RunConfig.build(values, profile="demo")


def test_cleared_optional_fields_mean_their_default_and_the_config_survives_xcom():
    config = RunConfig.build({"steps": "", "eval_max_steps": None, "wandb_conn_id": ""}, profile="demo")
    assert config.steps is None and config.eval_max_steps is None and config.wandb_conn_id is None
    assert config.train_params().steps == 0  # the stage's "preset default"
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="demo_count must be set"):
        RunConfig.build({"demo_count": None}, profile="demo")


def test_every_setting_has_a_title_a_description_and_a_section():
    for f in RunConfig.settings():
        assert f.metadata["title"] and f.metadata["description"] and f.metadata["section"], f.name
    assert "profile" not in RunConfig.setting_names()
    assert {f.name for f in dataclasses.fields(RunConfig)} - set(RunConfig.setting_names()) == {"profile"}


def test_pi05_starts_from_pi05_base_and_refuses_the_other_familys_weights():
    config = RunConfig.build({"model": "pi05"}, profile="production")
    train = openpi_train_config(config.train_params())
    assert train.model.pi05 and train.weight_loader.params_path == PI05_BASE_PARAMS
    assert train.name == "pi05_lora_pickcube_v1" and train.lr_schedule.peak_lr == 2.5e-5
    # the base checkpoint spelled out or as 'base' is the same training (same cache key)
    spelled = RunConfig.build({"model": "pi05", "pretrained_uri": PI05_BASE_PARAMS}, profile="production")
    assert spelled.train_params().weights_uri() == config.train_params().weights_uri()
    # a pi0 run keeps the key it had before `model` existed; a pi05 run's key differs
    pi0 = RunConfig.build(profile="production").train_params().key_params()
    assert "model" not in pi0 and config.train_params().key_params()["model"] == "pi05"
    with pytest.raises(TrainError, match="pi0's base checkpoint, which does not load into a pi05 model"):
        RunConfig.build({"model": "pi05", "pretrained_uri": PI0_BASE_PARAMS}, profile="production")
    with pytest.raises(ConfigError, match="model: 'pi0_fast' is not one of"):
        RunConfig.build({"model": "pi0_fast"}, profile="production")
    with pytest.raises(TrainError, match="the tiny preset's dummy gemma variants"):
        RunConfig.build({"model": "pi05", "preset": "tiny"}, profile="production")  # 'base' is gs:// pi05_base


def test_a_deployment_that_requires_approval_cannot_be_switched_off_by_a_run(monkeypatch):
    assert not RunConfig.build(profile="production").promote_params().require_approval
    monkeypatch.setenv("PIPELINE_REQUIRE_APPROVAL", "1")
    config = RunConfig.build({"require_approval": False}, profile="production")
    assert config.promote_params(actor="a").require_approval
    assert RunConfig.build(profile="production").require_approval  # and the form shows it on


@pytest.mark.parametrize("preset", ["tiny", "lora", "full"])
def test_every_step_count_gives_a_schedule_optax_accepts(preset):
    """A 500-step LoRA run used to reach the GPU worker and crash in optax (warm-up 1000 = decay steps). The warm-up
    now scales with the run (openpi's 1000 of 30000, at least 1, at most 1000), resolved and checked with the run
    config, and openpi's own schedule is built and evaluated over the whole run."""
    import jax.numpy as jnp
    import numpy as np

    from tasks.core.params import PRESET_DEFAULTS

    default = PRESET_DEFAULTS[preset].num_train_steps
    for steps in sorted({1, 2, 29, 30, 31, 999, 1000, 1001, 29_999, 30_000, 30_001, 100_000, default}):
        config = RunConfig.build(
            {"preset": preset, "steps": steps, "pretrained_uri": "" if preset == "tiny" else BASE},
            profile="production",
        )
        expected = config.train_params().lr_schedule()
        train = openpi_train_config(config.train_params())
        assert train.lr_schedule.warmup_steps == expected.warmup_steps == min(1000, max(1, round(steps / 30)))
        assert 0 < train.lr_schedule.warmup_steps < train.lr_schedule.decay_steps
        assert train.lr_schedule.decay_steps == max(steps, 2)
        schedule = train.lr_schedule.create()  # optax's warmup_cosine_decay_schedule: raises on an empty decay
        lrs = np.asarray([schedule(jnp.asarray(s)) for s in (0, expected.warmup_steps, steps)])
        assert np.isfinite(lrs).all()
        np.testing.assert_allclose(lrs[1], train.lr_schedule.peak_lr, rtol=1e-5)  # the peak is reached
        assert lrs[2] <= lrs[1]
    # the default run keeps openpi's recipe exactly
    assert RunConfig.build(profile="production").train_params().lr_schedule().warmup_steps == 1000
    # and so does every data-sized default run length (the schedule built for the steps the worker resolves)
    params = RunConfig.build({"preset": preset, "pretrained_uri": "" if preset == "tiny" else BASE}).train_params()
    for frames in (1, 31, 2_000, 14_000, 40_000, 10**7):
        steps = params.resolved_steps(frames)
        train = openpi_train_config(params, frames=frames)
        assert train.num_train_steps == steps and 0 < train.lr_schedule.warmup_steps < train.lr_schedule.decay_steps
        assert np.isfinite(float(train.lr_schedule.create()(jnp.asarray(steps))))


def test_the_default_run_length_follows_the_training_set():
    """openpi sized 30k steps at batch 32 for LIBERO (~3.5 epochs); on 200 planner demos (~14k frames) that is ~70
    epochs. Left empty, lora/full make ~30 passes (openpi's ALOHA sim recipe), in thousands, within 2k..30k; a given
    number of steps is kept; the tiny preset keeps its own default; the kept-checkpoint period follows the length."""
    from tasks.core.params import AUTO_KEEP, candidate_steps, data_sized_steps

    assert data_sized_steps(14_000, 32) == 13_000
    assert data_sized_steps(100, 32) == 2_000 and data_sized_steps(10**7, 32) == 30_000
    production = RunConfig.build(profile="production").train_params()
    assert production.keep_period == AUTO_KEEP and production.val_interval == 1000
    assert production.resolved_steps(14_000) == 13_000 and production.resolved_steps() == 30_000
    assert "30 epochs of 14000 frames" in production.steps_source(14_000)
    assert production.resolved_keep_period(13_000) == 2000
    assert candidate_steps(production, 13_000) == [2000, 4000, 6000, 8000, 10000, 12000]
    assert production.resolved_keep_period(30_000) == 5000  # openpi's keep_period at openpi's length
    assert production.resolved_keep_period(2_000) == 0 and candidate_steps(production, 2_000) == []
    given = RunConfig.build({"steps": 500, "keep_period": 0}, profile="production").train_params()
    assert given.resolved_steps(14_000) == 500 and given.steps_source(14_000) == "given"
    assert candidate_steps(given, 500) == []
    assert RunConfig.build(profile="demo").train_params().resolved_steps(14_000) == 4
    big_batch = RunConfig.build({"batch_size": 64}, profile="production").train_params()
    assert big_batch.resolved_steps(14_000) == 7_000  # the same 30 epochs in half the steps
    # An auto period changes the cache key (a run kept with it is not the same artifact as one keeping nothing).
    assert production.key_params()["keep_period"] == AUTO_KEEP


def test_settings_that_would_fail_hours_later_or_pass_silently_are_refused_when_built():
    with pytest.raises(ConfigError, match="holdout_count=20 is not below demo_count=20"):
        RunConfig.build({"demo_count": 20, "holdout_count": 20}, profile="production")
    with pytest.raises(ConfigError, match="demo_count=True is not a valid int"):
        RunConfig.build({"demo_count": True}, profile="production")
    with pytest.raises(ConfigError, match="min_success_rate=False is not a valid float"):
        RunConfig.build({"min_success_rate": False}, profile="production")
    with pytest.raises(ConfigError, match="eval_episodes=0"):
        RunConfig.build({"eval_episodes": 0, "min_success_rate": 0.2}, profile="production")
    assert RunConfig.build({"eval_episodes": 0, "min_success_rate": 0}, profile="production").eval_episodes == 0
