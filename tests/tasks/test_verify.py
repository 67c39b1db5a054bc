"""The evaluation harness, its protocol and the promotion rule.

Sim tests run real ManiSkill envs on real demos made here (motion planning, software-Vulkan rendering,
LeRobot datasets): the eval env must render and observe exactly like the training frames, and an oracle
replaying held-out demos must succeed in it, while a harness with the wrong control mode must be caught.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from tasks.core.protocol import protocol_differences
from tasks.core.run_config import RunConfig
from tasks.promote import ALPHA, better_p_value, decide
from tasks.verify import (
    EVAL_SEED_BASE,
    DemoReplayPolicy,
    EvalProtocol,
    HarnessError,
    VerifyError,
    check_seeds_disjoint,
    default_step_limit,
    summarize,
    verdict_of,
    wilson_interval,
)

ENV_ID = "PickCube-v1"


# ---- verdicts, statistics, the protocol (no sim) ----------------------------------------------------------------------
def test_verdict_is_a_word_and_zero_success_is_never_passed():
    base = {"shape_ok": True, "finite": True, "harness_ok": True}
    assert verdict_of(base, [], episodes=2)[0] == "unchecked"
    assert verdict_of(base, [], episodes=0)[0] == "unchecked"
    # 0 % success against a success floor: failed, and the reason names the check
    verdict, reason = verdict_of({**base, "success_rate_ok": False}, ["success_rate_ok"], episodes=2)
    assert verdict == "failed" and "success_rate_ok" in reason
    # an open-loop threshold alone does not judge a closed-loop success rate that was measured
    assert verdict_of({**base, "action_mae_ok": True}, ["action_mae_ok"], episodes=2)[0] == "unchecked"
    assert verdict_of({**base, "action_mae_ok": True}, ["action_mae_ok"], episodes=0)[0] == "passed"
    assert verdict_of({**base, "success_rate_ok": True}, ["success_rate_ok"], episodes=50)[0] == "passed"
    # a broken harness fails the verdict even without thresholds
    assert verdict_of({**base, "harness_ok": False}, [], episodes=2)[0] == "failed"


def test_wilson_interval_and_success_metrics():
    assert wilson_interval(0, 2) == pytest.approx([0.0, 0.6576], abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert wilson_interval(0, 0) is None
    episodes = [
        {"success_once": True, "success_at_end": False, "steps_to_success": 30, "steps": 100},
        {"success_once": True, "success_at_end": True, "steps_to_success": 50, "steps": 100},
        {"success_once": False, "success_at_end": False, "steps_to_success": None, "steps": 100},
    ]
    m = summarize(episodes)
    assert (
        m["successes"] == 2
        and m["success_rate"] == pytest.approx(2 / 3)
        and m["success_at_end_rate"] == pytest.approx(1 / 3)
    )
    assert m["median_steps_to_success"] == 40 and m["success_rate_ci95"] == wilson_interval(2, 3)


def test_evaluation_seeds_overlapping_the_demos_are_refused():
    demo_seeds = frozenset(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 5))
    with pytest.raises(VerifyError, match=r"overlap the demo set's episode seeds \(5 shared"):
        check_seeds_disjoint(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 50), demo_seeds)
    check_seeds_disjoint(range(EVAL_SEED_BASE + 5, EVAL_SEED_BASE + 55), demo_seeds)


def test_step_limit_follows_the_longest_training_episode_with_headroom():
    assert default_step_limit(88) == 102  # PickCube's longest planner demo: 88 steps
    assert default_step_limit(100) == 115


def test_the_oracle_answers_consecutive_chunks_of_its_demo():
    actions = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)
    oracle = DemoReplayPolicy(actions, horizon=4, execute_steps=3)
    chunks = [oracle.infer({})["actions"] for _ in range(4)]
    np.testing.assert_array_equal(chunks[0], actions[0:4])
    np.testing.assert_array_equal(chunks[1], actions[3:7])
    np.testing.assert_array_equal(chunks[3], actions[9:12])  # the last chunk is what is left of the demo


def _result(successes: int, episodes: int, **protocol_changes) -> dict:
    protocol = EvalProtocol(
        env_id=ENV_ID,
        env_kwargs={
            "obs_mode": "rgb",
            "control_mode": "pd_ee_delta_pose",
            "sensor_configs": {"shader_pack": "default"},
        },
        seed_start=EVAL_SEED_BASE,
        episodes=episodes,
        max_steps=102,
        execute_steps=5,
    )
    protocol = dataclasses.replace(protocol, **protocol_changes)
    return {
        "verify": f"s3://b/{ENV_ID}/verify/{successes}-{episodes}-{sorted(protocol_changes)}",
        "verdict": "passed",
        "successes": successes,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "protocol": protocol.to_dict(),
    }


def test_promotion_rule_compares_like_with_like_and_needs_a_significant_win():
    # only a passed verification is ever promoted, even with nothing deployed
    assert decide({**_result(2, 2), "verdict": "unchecked"}, None, force=False)[0] is False
    assert decide({**_result(0, 2), "verdict": "failed"}, None, force=False)[0] is False
    assert decide(_result(40, 50), None, force=False) == (True, "no current latest")
    current = _result(35, 50)
    # a clear win under the same protocol
    promoted, reason = decide(_result(45, 50), current, force=False)
    assert promoted and "45/50 vs 35/50" in reason
    # a win the sample size cannot tell from noise
    promoted, reason = decide(_result(38, 50), current, force=False)
    assert not promoted and "not shown better" in reason
    # another protocol: refused, naming what differs, whatever the numbers say
    for changes, named in (
        ({"max_steps": 150}, "max_steps: 150 vs 102"),
        ({"seed_start": 7}, "seed_start"),
        ({"env_kwargs": {"obs_mode": "rgb", "control_mode": "pd_ee_delta_pose"}}, "env_kwargs.sensor_configs"),
    ):
        promoted, reason = decide(_result(50, 50, **changes), current, force=False)
        assert not promoted and "another protocol" in reason and named in reason, reason
    # a latest written before protocols were recorded is not comparable either
    assert not decide(_result(50, 50), {**current, "protocol": None}, force=False)[0]
    assert decide(_result(38, 50), current, force=True)[0]  # an operator's override (rollback)


def test_the_production_profile_evaluates_enough_episodes_for_the_rule_to_promote():
    production = RunConfig.build(profile="production")
    n = production.eval_episodes
    assert production.min_success_rate > 0  # production judges success, so its verdicts can be 'passed'
    assert better_p_value((n, n), (n // 2, n)) < ALPHA  # a perfect candidate beats a 50 % incumbent
    assert better_p_value((int(0.9 * n), n), (int(0.7 * n), n)) < ALPHA
    demo = RunConfig.build(profile="demo")
    m = demo.eval_episodes
    promoted, reason = decide(_result(m, m), _result(0, m), force=False)
    assert not promoted and "evaluate more episodes" in reason


def test_cpu_rendered_evaluation_on_a_worker_without_lavapipe_is_refused_with_the_fix(monkeypatch, tmp_path):
    """A GPU worker evaluating frames rendered on the CPU needs the software Vulkan driver: found, or refused clearly."""
    from tasks.sim.rollout import ensure_software_vulkan

    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    monkeypatch.setenv("PIPELINE_LAVAPIPE_ICD", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="run tools/setup_system.sh .* or set device=gpu"):
        ensure_software_vulkan()
    icd = tmp_path / "lvp_icd.json"
    icd.write_text("{}")
    monkeypatch.setenv("PIPELINE_LAVAPIPE_ICD", str(icd))
    ensure_software_vulkan()
    assert os.environ["VK_ICD_FILENAMES"] == str(icd)


def test_protocol_differences_are_listed_in_words():
    a, b = _result(1, 2)["protocol"], _result(1, 2, max_steps=90, execute_steps=2)["protocol"]
    assert protocol_differences(a, a) == []
    assert protocol_differences(a, b) == ["execute_steps: 5 vs 2", "max_steps: 102 vs 90"]


# ---- the harness on real envs (sim) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_data(demo_set, rendered_set, tmp_path_factory):
    """A held-out shard (episodes 0-1) and a training dataset of the same demo set, converted by the stages."""
    from tasks.convert import ConvertParams, convert
    from tasks.core.store import ArtifactStore
    from tasks.render import RenderParams, render
    from tasks.verify import read_sources

    root, demos = demo_set
    held_out = render(RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=2), root=root, demos=demos)
    holdout = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[held_out.uri])
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[rendered_set[1]])
    store = ArtifactStore(root)
    sources = read_sources(store, store.require(dataset.uri), store.require(holdout.uri))
    _, holdout_dir = store.fetch(holdout.uri, tmp_path_factory.mktemp("holdout"))
    return {"sources": sources, "holdout_dir": holdout_dir}


@pytest.mark.sim
def test_eval_env_first_frame_and_state_equal_the_dataset_pixel_for_pixel(eval_data):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.core.specs import get_spec
    from tasks.policy.transforms import to_hwc_uint8
    from tasks.sim.rollout import make_eval_env, observation_input
    from tasks.verify import eval_env_kwargs

    spec, sources = get_spec(ENV_ID), eval_data["sources"]
    ds = LeRobotDataset("maniskill/holdout", root=eval_data["holdout_dir"])
    kwargs = eval_env_kwargs(sources, "auto")
    assert kwargs["sensor_configs"] == {"shader_pack": "default"} and kwargs["control_mode"] == spec.control_mode
    env = make_eval_env(ENV_ID, kwargs, 10)
    # the env verify used to build (no recorded kwargs: ManiSkill's 'minimal' shader) must fail the same comparison
    old = make_eval_env(
        ENV_ID,
        {"obs_mode": "rgb", "control_mode": spec.control_mode, "render_backend": "cpu", "sim_backend": "physx_cpu"},
        10,
    )
    try:
        for i, episode in enumerate(sources.holdout_episodes):
            first = ds[int(ds.episode_data_index["from"][i])]
            live = observation_input(spec, env.reset(seed=episode["seed"])[0])
            np.testing.assert_array_equal(
                live["images"]["base_camera"], to_hwc_uint8(first["observation.images.base_camera"])
            )
            np.testing.assert_array_equal(live["state"], first["observation.state"].numpy())
            stale = observation_input(spec, old.reset(seed=episode["seed"])[0])
            assert not np.array_equal(stale["images"]["base_camera"], live["images"]["base_camera"])
    finally:
        env.close()
        old.close()


@pytest.mark.sim
def test_a_camera_size_is_recorded_in_the_dataset_and_evaluation_renders_at_it(demo_set, tmp_path):
    """production renders at pi0's 224x224; whatever the size, verify's env must produce the frames trained on."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.convert import ConvertParams, convert
    from tasks.core.specs import get_spec
    from tasks.core.store import ArtifactStore
    from tasks.policy.transforms import to_hwc_uint8
    from tasks.render import RenderParams, render
    from tasks.sim.rollout import make_eval_env, observation_input
    from tasks.verify import eval_env_kwargs, read_sources

    root, demos = demo_set
    spec = get_spec(ENV_ID)
    rendered = render(RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=1, camera_size=96), root=root, demos=demos)
    holdout = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[rendered.uri])
    assert holdout.metrics["image_shape_chw"] == [3, 96, 96]
    store = ArtifactStore(root)
    # one episode stands for both splits here: what is checked is how verify builds its env from the render
    sources = read_sources(store, store.require(holdout.uri), store.require(holdout.uri))
    kwargs = eval_env_kwargs(sources, "auto")
    assert kwargs["sensor_configs"] == {"shader_pack": "default", "width": 96, "height": 96}
    _, holdout_dir = store.fetch(holdout.uri, tmp_path)
    first = LeRobotDataset("maniskill/holdout", root=holdout_dir)[0]
    env = make_eval_env(ENV_ID, kwargs, 10)
    try:
        live = observation_input(spec, env.reset(seed=sources.holdout_episodes[0]["seed"])[0])
    finally:
        env.close()
    np.testing.assert_array_equal(live["images"]["base_camera"], to_hwc_uint8(first["observation.images.base_camera"]))


@pytest.mark.sim
def test_oracle_harness_check_passes_on_cpu_and_a_wrong_control_mode_is_caught(eval_data):
    from tasks.core.specs import get_spec
    from tasks.sim.rollout import EnvWorkers, LocalEnv, make_eval_env
    from tasks.verify import eval_env_kwargs, harness_check, holdout_demo_actions

    spec, sources = get_spec(ENV_ID), eval_data["sources"]
    actions = holdout_demo_actions(eval_data["holdout_dir"], sources)
    assert [len(a) for a in actions] == [e["length"] for e in sources.holdout_episodes] and actions[0].shape[1] == 7
    kwargs, limit = eval_env_kwargs(sources, "auto"), max(len(a) for a in actions)
    with LocalEnv(make_eval_env(ENV_ID, kwargs, limit), spec) as env:
        result = harness_check(spec, env, sources, actions, horizon=10, execute_steps=5)
    assert result["ok"] and result["episodes"] == 2 and result["success_at_end_rate"] == 1.0
    assert (
        result["bar"] == 1.0 and sources.holdout_render_success_ratio == 1.0
    )  # every held-out demo replayed in render
    # The same oracles on two worker processes stepped together (the batched evaluation): the same episodes,
    # step for step.
    with EnvWorkers(2, ENV_ID, kwargs, limit, spec) as workers:
        parallel = harness_check(spec, workers, sources, actions, horizon=10, execute_steps=5)

    def outcome(r):
        return [(e["seed"], e["success_at_end"], e["steps_to_success"], e["steps"]) for e in r["per_episode"]]

    assert outcome(parallel) == outcome(result)
    # The same demos through a harness whose env takes absolute end-effector poses: the oracle cannot succeed,
    # and verify blames the harness, not the policy.
    with LocalEnv(make_eval_env(ENV_ID, {**kwargs, "control_mode": "pd_ee_pose"}, limit), spec) as broken:
        with pytest.raises(HarnessError, match="harness, not the policy, is wrong.*'pd_ee_pose'"):
            harness_check(spec, broken, sources, actions, horizon=10, execute_steps=5)


@pytest.mark.sim
def test_demo_seeds_and_the_longest_episode_come_from_the_artifacts_json(eval_data, demo_set, rendered_set):
    from tasks.core.store import ArtifactStore

    store = ArtifactStore(demo_set[0])
    demos = store.read_json(store.files_uri(store.require(demo_set[1])) + "/trajectory.json")
    replayed = store.read_json(store.files_uri(store.require(rendered_set[1])) + "/trajectory.json")
    sources = eval_data["sources"]
    assert sources.demo_seeds == frozenset(ep["reset_kwargs"]["seed"] for ep in demos["episodes"])
    assert [e["seed"] for e in sources.holdout_episodes] == [ep["reset_kwargs"]["seed"] for ep in demos["episodes"][:2]]
    # after conversion to pd_ee_delta_pose, as the policy acts
    assert sources.longest_training_episode == max(ep["elapsed_steps"] for ep in replayed["episodes"])
    with pytest.raises(VerifyError, match="overlap"):
        check_seeds_disjoint(range(0, 3), sources.demo_seeds)


@pytest.mark.sim
def test_a_held_out_set_smaller_than_the_batch_is_refused_before_training(eval_data):
    """A held-out set too small for one validation batch (production trains at batch 32) is refused with the fix."""
    import types

    from tasks.train import TrainError, TrainParams, held_out_batches

    with pytest.raises(TrainError, match="fewer than the batch size 10000.*holdout_count.*val_interval=0"):
        held_out_batches(
            types.SimpleNamespace(batch_size=10_000),
            TrainParams(env_id=ENV_ID, val_interval=1000),
            eval_data["holdout_dir"],
            "key",
            sharding=None,
        )


@pytest.mark.sim
def test_an_eval_worker_that_fails_or_dies_is_reported_at_once_and_the_rest_are_closed(eval_data):
    """A worker's failure comes back as RolloutError with its traceback; a killed worker reads as died; every
    worker process is gone within the close deadline either way."""
    import time

    from tasks.core.specs import get_spec
    from tasks.sim.rollout import EnvWorkers, RolloutError
    from tasks.verify import eval_env_kwargs

    spec, kwargs = get_spec(ENV_ID), eval_env_kwargs(eval_data["sources"], "auto")
    with pytest.raises(RolloutError, match="an eval env worker failed:"):
        EnvWorkers(2, ENV_ID, {**kwargs, "control_mode": "no_such_mode"}, 10, spec)
    workers = EnvWorkers(2, ENV_ID, kwargs, 10, spec)
    procs = list(workers.procs)
    workers.reset([(0, EVAL_SEED_BASE, None), (1, EVAL_SEED_BASE + 1, None)])
    procs[1].kill()
    procs[1].join(10)
    t0 = time.monotonic()
    with pytest.raises(RolloutError, match="died"):
        workers.step([(0, np.zeros(7)), (1, np.zeros(7))])
    workers.close()
    assert time.monotonic() - t0 < 40 and not any(p.is_alive() for p in procs)
