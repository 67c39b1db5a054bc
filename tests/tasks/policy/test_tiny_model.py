"""The tiny preset's pi0 with a small SigLIP tower: built by openpi's own Pi0, loaded by openpi's own loader."""

import threading

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from openpi.models import pi0 as _pi0

from tasks.core.checks import UNRECORDED_VISION_TOWER, check_vision_tower
from tasks.policy.configs import for_task
from tasks.policy.tiny_model import DEFAULT_VISION_VARIANT, SmallTowerPi0Config


def _tower_shapes(model) -> dict:
    img = nnx.state(model.PaliGemma.img).to_pure_dict()
    return {"/".join(map(str, k)): v.shape for k, v in _flatten(img).items()}


def _flatten(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


@pytest.fixture(scope="module")
def tiny_model():
    config = for_task("PickCube-v1", "tiny").model
    return config, nnx.eval_shape(config.create, jax.random.key(0))


def test_the_tiny_tower_is_siglip_mu_with_28_pixel_patches(tiny_model):
    config, model = tiny_model
    shapes = _tower_shapes(model)
    assert shapes["embedding/kernel"] == (28, 28, 3, 32)  # 28x28 patches, width 32 (SigLIP mu)
    assert shapes["pos_embedding"] == (1, 64, 32)  # (224 / 28)^2 = 64 tokens per camera, not So400m's 256
    assert shapes["head/kernel"] == (32, 64)  # projected to the dummy gemma's width
    assert sum(int(np.prod(s)) for s in shapes.values()) < 100_000  # So400m: ~400M
    # openpi's module name is back once the model is built: lora and full models get So400m/14
    assert _pi0._siglip.Module.__module__ == "openpi.models.siglip"
    full = nnx.eval_shape(for_task("PickCube-v1", "full").model.create, jax.random.key(0))
    assert _tower_shapes(full)["embedding/kernel"] == (14, 14, 3, 1152)
    assert DEFAULT_VISION_VARIANT == UNRECORDED_VISION_TOWER == "So400m/14"


def test_the_small_tower_runs_through_openpis_loss_and_sampler(tiny_model):
    config, _ = tiny_model
    model = config.create(jax.random.key(0))
    obs, act = config.fake_obs(2), config.fake_act(2)
    loss = model.compute_loss(jax.random.key(1), obs, act, train=False)
    assert loss.shape == (2, config.action_horizon) and np.isfinite(np.asarray(loss)).all()
    actions = model.sample_actions(jax.random.key(2), obs, num_steps=2)
    assert actions.shape == (2, config.action_horizon, config.action_dim)


def test_openpis_load_rebuilds_the_small_tower_and_refuses_another_ones_weights(tiny_model):
    """`BaseModelConfig.load` calls `create`: params of the small tower load; So400m's shapes do not fit."""
    config, _ = tiny_model
    params = nnx.state(config.create(jax.random.key(0))).to_pure_dict()
    loaded = config.load(params)
    got = nnx.state(loaded).to_pure_dict()["PaliGemma"]["img"]["embedding"]["kernel"]
    np.testing.assert_array_equal(np.asarray(got), params["PaliGemma"]["img"]["embedding"]["kernel"])
    other = SmallTowerPi0Config(**{**_fields(config), "vision_variant": "mu/32"})
    with pytest.raises(ValueError):
        other.load(params)


def _fields(config) -> dict:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def test_threads_creating_models_at_once_each_get_their_own_tower(tiny_model):
    config, _ = tiny_model
    coarse = SmallTowerPi0Config(**{**_fields(config), "vision_variant": "mu/32"})
    results = {}

    def build(name, cfg):
        results[name] = _tower_shapes(nnx.eval_shape(cfg.create, jax.random.key(0)))["embedding/kernel"]

    threads = [threading.Thread(target=build, args=(n, c)) for n, c in (("a", config), ("b", coarse))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": (28, 28, 3, 32), "b": (32, 32, 3, 32)}


def test_a_checkpoint_of_another_tower_is_refused_with_both_names():
    check_vision_tower("s3://b/train/k", {"vision_tower": "mu/28"}, "mu/28", "the tiny preset", ValueError)
    with pytest.raises(
        ValueError, match=r"trained with the SigLIP So400m/14 vision tower, but the tiny preset builds mu/28"
    ):
        check_vision_tower(
            "s3://b/train/old", {}, "mu/28", "the tiny preset", ValueError
        )  # before towers were recorded
