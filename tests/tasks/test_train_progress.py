"""What a user watching a run sees: the devices, an ETA, each evaluation episode; a CPU fallback refused."""

import logging

import pytest

from tasks.core.params import TrainParams
from tasks.train import TrainError, check_backend, format_eta
from tasks.verify import EpisodeProgress


def test_lora_and_full_on_a_cpu_backend_are_refused_unless_asked_for():
    for preset in ("lora", "full"):
        with pytest.raises(TrainError, match=f"preset {preset} would train on JAX's CPU backend.*allow_cpu=true"):
            check_backend(TrainParams(env_id="PickCube-v1", preset=preset), "cpu")
        check_backend(TrainParams(env_id="PickCube-v1", preset=preset), "gpu")
        check_backend(TrainParams(env_id="PickCube-v1", preset=preset, allow_cpu=True), "cpu")
    check_backend(TrainParams(env_id="PickCube-v1", preset="tiny"), "cpu")  # the tiny preset is made for the CPU
    # a runtime switch: the same run on a GPU or, when allowed, a CPU is the same artifact
    params = TrainParams(env_id="PickCube-v1", preset="full", from_scratch=True)
    assert params.key_params() == TrainParams(**{**params.__dict__, "allow_cpu": True}).key_params()


def test_the_eta_reads_as_hours_minutes_seconds():
    assert format_eta(0) == "0:00:00"
    assert format_eta(59.6) == "0:01:00"
    assert format_eta(29_000 * 1.9) == "15:18:20"
    assert format_eta(-3) == "0:00:00"


def test_each_closed_loop_episode_is_logged_as_it_ends(caplog, monkeypatch):
    clock = iter([10.0, 20.0])
    monkeypatch.setattr("tasks.verify.time.monotonic", lambda: next(clock))
    progress = EpisodeProgress(total=4, t0=0.0)
    with caplog.at_level(logging.INFO, logger="tasks.verify"):
        progress(0, {"seed": 1_000_000, "success_once": True, "steps_to_success": 31, "steps": 80})
        progress(1, {"seed": 1_000_001, "success_once": False, "steps_to_success": None, "steps": 80})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "[verify] episode 1/4 (seed 1000000): success at step 31, 80 steps; success so far 1/1 (100%); ETA 30 s",
        "[verify] episode 2/4 (seed 1000001): no success, 80 steps; success so far 1/2 (50%); ETA 20 s",
    ]


def test_a_warm_start_that_would_drop_lora_weights_is_refused(local_root, tmp_path):
    """openpi's loader keeps only the keys the target model has: a lora checkpoint loaded into the full model would
    lose its adapters (all its fine-tuning) and still read as a warm start. full -> lora is fine (new adapters on the
    fine-tuned base), as is lora -> lora."""
    from tasks.core.store import ArtifactStore
    from tasks.train import resolve_initial_weights
    from tests.conftest import publish_dir

    store = ArtifactStore(local_root)
    (tmp_path / "checkpoint" / "params").mkdir(parents=True)
    (tmp_path / "checkpoint" / "params" / "x").write_text("weights")
    uris = {
        preset: publish_dir(
            store,
            "PickCube-v1",
            "train",
            tmp_path,
            tag=preset,
            params={"preset": preset, "model": "pi0"},
            metrics={"vision_tower": "So400m/14", "steps": 10, "checkpoint_steps": [10]},
        )
        for preset in ("lora", "full")
    }
    with pytest.raises(TrainError, match="holds lora weights.*preset=lora.*pretrained_uri=base"):
        resolve_initial_weights(TrainParams(env_id="PickCube-v1", preset="full", pretrained_uri=uris["lora"]), store)
    for preset, parent in (("lora", "lora"), ("lora", "full"), ("full", "full")):
        weights, manifest = resolve_initial_weights(
            TrainParams(env_id="PickCube-v1", preset=preset, pretrained_uri=uris[parent]), store
        )
        assert weights == uris[parent] and manifest.params["preset"] == parent
