"""train -> verify -> promote -> serve with the tiny pi0 and pi0.5 presets on CPU, on a real S3 endpoint, on data made here.

One demo set is downloaded; its first three episodes become the training dataset and the fourth a
held-out dataset (a separate render shard, never seen by training, used for the validation loss and by
verify). The demos are planned from seed EVAL_SEED_BASE, where verify's closed-loop seeds start by
default, so the seed-overlap refusal is exercised on real demo JSON. Everything is real: openpi's model,
loader, optimizer and orbax checkpoints, `create_trained_policy`, ManiSkill rollouts.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from tasks.convert import ConvertParams, convert
from tasks.core.specs import get_spec
from tasks.core.store import ArtifactStore, latest_uri
from tasks.download import DownloadParams, download
from tasks.promote import PromoteParams, promote
from tasks.render import RenderParams, render
from tasks.stats import StatsParams, stats
from tasks.train import PROGRESS_STAGE, TrainError, TrainParams, train
from tasks.verify import EVAL_SEED_BASE, VerifyError, VerifyParams, verdict_line, verify
from tests.conftest import PROJECT, publish_dir

pytestmark = [pytest.mark.sim, pytest.mark.train]
ENV_ID = "PickCube-v1"
HORIZON = 10


@pytest.fixture(scope="module")
def data(s3_endpoint):
    boto3.client("s3").create_bucket(Bucket="train-e2e")
    root = "s3://train-e2e/runs"
    demos = download(DownloadParams(env_id=ENV_ID, count=4, seed=EVAL_SEED_BASE), root=root)
    train_shard = render(RenderParams(env_id=ENV_ID, shard_start=0, shard_stop=3), root=root, demos=demos.uri)
    holdout_shard = render(RenderParams(env_id=ENV_ID, shard_start=3, shard_stop=4), root=root, demos=demos.uri)
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[train_shard.uri])
    holdout = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[holdout_shard.uri])
    norm = stats(StatsParams(env_id=ENV_ID, action_horizon=HORIZON), root=root, dataset=dataset.uri)
    return {"root": root, "dataset": dataset.uri, "holdout": holdout.uri, "stats": norm.uri}


@pytest.fixture(scope="module")
def trained(data):
    """Two steps, both checkpoints kept (keep_period 1): step 1 as a candidate, step 2 as the final checkpoint."""
    result = train(
        TrainParams(env_id=ENV_ID, steps=2, action_horizon=HORIZON, val_interval=1, keep_period=1),
        root=data["root"],
        dataset=data["dataset"],
        stats=data["stats"],
        holdout=data["holdout"],
    )
    return result


@pytest.fixture(scope="module")
def trained_pi05(data):
    return train(
        TrainParams(env_id=ENV_ID, model="pi05", steps=2, action_horizon=HORIZON),
        root=data["root"],
        dataset=data["dataset"],
        stats=data["stats"],
    )


def s3_keys(uri: str) -> set[str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    keys = {o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", [])}
    # files live in the artifact's one payload folder, next to the manifest that names it
    assert len({k.split("/", 1)[0] for k in keys if k.startswith("payload-")}) <= 1, keys
    return {k.split("/", 1)[1] if k.startswith("payload-") else k for k in keys}


def test_tiny_preset_trains_and_uploads_an_openpi_checkpoint(trained, data):
    m = trained.metrics
    assert not trained.cache_hit and m["steps"] == 2 and m["resumed_from_step"] == 0 and m["init_weights"] is None
    assert np.isfinite(m["final_loss"]) and m["checkpoint_mb"] > 1 and m["peak_rss_mb"] > 0
    keys = s3_keys(trained.uri)
    assert "manifest.json" in keys and "train_log.jsonl" in keys
    assert f"checkpoint/assets/{ENV_ID}/norm_stats.json" in keys
    assert any(k.startswith("checkpoint/params/") for k in keys) and any(
        k.startswith("checkpoint/train_state/") for k in keys
    )
    # the kept checkpoint of step 1: what openpi's loader reads (params, assets), without the optimizer state
    assert m["checkpoint_steps"] == [1, 2] and f"candidates/1/assets/{ENV_ID}/norm_stats.json" in keys
    assert any(k.startswith("candidates/1/params/") for k in keys) and not any(
        k.startswith("candidates/1/train_state") for k in keys
    )
    store = ArtifactStore(data["root"])
    log = [
        json.loads(x) for x in store.fs.cat(store._path(trained.files_uri) + "/train_log.jsonl").decode().splitlines()
    ]
    train_log = [r for r in log if "loss" in r]
    assert [r["step"] for r in train_log] == [1, 2] and all(np.isfinite(r["loss"]) for r in train_log)
    assert all(r["param_norm"] > 0 for r in train_log)  # openpi's weight-matrix norm, beside loss and grad norm
    # the held-out validation loss, every val_interval steps, beside the training loss
    val_log = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in val_log] == [1, 2] and all(
        np.isfinite(r["val_loss"]) and r["val_loss"] > 0 for r in val_log
    )
    assert m["val_loss_final"] == val_log[-1]["val_loss"] and m["val_frames"] == 4  # val_batches=4 at batch 1
    assert data["holdout"] in store.require(trained.uri).parents
    # the resume points are gone once the artifact is published
    assert not s3_keys(data["root"] + f"/{ENV_ID}/{PROGRESS_STAGE}")
    again = train(
        TrainParams(env_id=ENV_ID, steps=2, action_horizon=HORIZON, wandb=True, val_interval=1, keep_period=1),
        root=data["root"],
        dataset=data["dataset"],
        stats=data["stats"],
        holdout=data["holdout"],
    )
    assert again.cache_hit and again.uri == trained.uri  # W&B on/off is not part of what is produced


def test_checkpoint_loads_with_create_trained_policy_and_infers_on_a_real_frame(trained, data, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from openpi.policies import policy_config
    from openpi.shared import normalize

    from tasks.core.checkpoints import fetch_checkpoint
    from tasks.core.specs import get_spec
    from tasks.policy.configs import for_task

    store = ArtifactStore(data["root"])
    _, ckpt = fetch_checkpoint(store, trained.uri, tmp_path)
    _, stats_dir = store.fetch(data["stats"], tmp_path)
    saved = normalize.load(ckpt / "assets" / ENV_ID)
    np.testing.assert_allclose(saved["state"].mean, normalize.load(stats_dir)["state"].mean)
    config = for_task(ENV_ID, "tiny", action_horizon=HORIZON)
    policy = policy_config.create_trained_policy(config, ckpt, default_prompt=get_spec(ENV_ID).prompt)
    _, holdout_dir = store.fetch(data["holdout"], tmp_path)
    frame = LeRobotDataset("maniskill/holdout", root=holdout_dir)[5]
    out = policy.infer(
        {
            "images": {"base_camera": frame["observation.images.base_camera"].numpy()},
            "state": frame["observation.state"].numpy(),
        }
    )
    assert out["actions"].shape == (HORIZON, 7) and np.isfinite(out["actions"]).all()
    assert np.abs(out["actions"]).max() > 0  # real predictions, unnormalised into env units


def test_verify_refuses_evaluation_seeds_that_overlap_the_demos(trained, data):
    """The demos were planned from seed EVAL_SEED_BASE: verify's default seeds would score the policy on them."""
    t0 = time.monotonic()
    with pytest.raises(VerifyError, match=rf"evaluation seeds {EVAL_SEED_BASE}\.\.{EVAL_SEED_BASE + 1} overlap"):
        verify(
            VerifyParams(env_id=ENV_ID, episodes=2, seed=0),
            root=data["root"],
            checkpoint=trained.uri,
            holdout=data["holdout"],
        )
    assert time.monotonic() - t0 < 30  # refused from the demo JSON, before loading the policy or an env
    assert not s3_keys(data["root"] + f"/{ENV_ID}/verify")


def test_verify_reports_its_protocol_harness_check_and_verdict_in_words(trained, data):
    store = ArtifactStore(data["root"])
    result = verify(
        VerifyParams(env_id=ENV_ID, holdout_frames=3, episodes=1, max_steps=10, seed=100),
        root=data["root"],
        checkpoint=trained.uri,
        holdout=data["holdout"],
    )
    m = result.metrics
    assert m["output_shape"] == [HORIZON, 7] and m["finite"] and m["holdout_frames"] == 3
    assert m["holdout_is_training_data"] is False and np.isfinite(m["action_mae"]) and len(m["action_mae_per_dim"]) == 7
    assert m["episodes"] == 1 and m["success_rate"] in (0.0, 1.0) and m["latency_ms_median"] > 0
    assert {"success_at_end_rate", "success_rate_ci95", "median_steps_to_success"} <= set(m)
    # no thresholds: the verdict says the success rate was not judged, never "passed"
    assert m["verdict"] == "unchecked" and "not judged" in m["verdict_reason"] and "UNCHECKED" in verdict_line(m)
    # the oracle replayed the held-out demo in the same harness and succeeded, as the render's replay did
    assert m["harness"]["ok"] and m["harness"]["success_at_end_rate"] == 1.0 and m["checks"]["harness_ok"]
    p = m["protocol"]
    assert p["seed_start"] == EVAL_SEED_BASE + 100 and p["episodes"] == 1 and p["max_steps"] == 10
    assert p["execute_steps"] == HORIZON // 2 and p["env_kwargs"]["sensor_configs"] == {"shader_pack": "default"}
    keys = s3_keys(result.uri)
    assert {"metrics.json", "report.html", "manifest.json"} <= keys
    report = store.fs.cat(store._path(result.files_uri) + "/report.html").decode()
    for section in (
        "id='metrics'",
        "id='loss'",
        "id='actions'",
        "id='frames'",
        "id='episodes'",
        "id='harness'",
        "id='protocol'",
        "id='lineage'",
    ):
        assert section in report
    assert ">UNCHECKED</span>" in report and "PASSED" not in report
    assert (
        "training and validation loss curves" in report
        and m["train"]["val_loss_final"] == trained.metrics["val_loss_final"]
    )
    assert report.count("data:image/png;base64,") >= 4
    # an unchecked verification is not promoted
    kept = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=result.uri)
    assert not kept.metrics["promoted"] and "unchecked" in kept.metrics["reason"]
    assert store.read_json(latest_uri(store, ENV_ID)) is None

    # 0 % against a 50 % success floor: "failed", in words, and not promoted
    failed = verify(
        VerifyParams(
            env_id=ENV_ID,
            holdout_frames=2,
            episodes=1,
            max_steps=10,
            seed=100,
            execute_steps=HORIZON,
            min_success_rate=0.5,
        ),
        root=data["root"],
        checkpoint=trained.uri,
        holdout=data["holdout"],
    )
    f = failed.metrics
    assert f["successes"] == 0 and f["verdict"] == "failed" and "success_rate_ok" in f["verdict_reason"]
    assert "verification FAILED" in verdict_line(f) and "0/1" in verdict_line(f)
    refused = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=failed.uri)
    assert not refused.metrics["promoted"] and "only a passed verification" in refused.metrics["reason"]


def test_each_kept_checkpoint_is_verified_and_the_rule_picks_the_better(trained, data):
    """verify on step 1 (a kept candidate) and step 2 (the final checkpoint), then select. Which is better is known
    from what was measured: more closed-loop successes, and on a tie the lower validation loss training logged."""
    from tasks.select_checkpoint import SelectParams, select

    store = ArtifactStore(data["root"])
    # the final checkpoint with the settings of the verify test above: the same artifact (step 2 is the plain URI)
    params = VerifyParams(env_id=ENV_ID, holdout_frames=3, episodes=1, max_steps=10, seed=100)
    final = verify(params, root=data["root"], checkpoint=trained.uri, holdout=data["holdout"])
    assert (
        verify(
            dataclasses.replace(params, step=2), root=data["root"], checkpoint=trained.uri, holdout=data["holdout"]
        ).uri
        == final.uri
    )
    kept = verify(
        dataclasses.replace(params, step=1), root=data["root"], checkpoint=trained.uri, holdout=data["holdout"]
    )
    assert kept.uri != final.uri and kept.metrics["lineage"]["checkpoint_ref"] == f"{trained.uri}@1"
    log = [
        json.loads(x) for x in store.fs.cat(store._path(trained.files_uri) + "/train_log.jsonl").decode().splitlines()
    ]
    val = {r["step"]: r["val_loss"] for r in log if "val_loss" in r}
    for result, step in ((kept, 1), (final, 2)):
        assert result.metrics["checkpoint_step"] == step and result.metrics["val_loss_at_step"] == val[step]
        assert result.metrics["protocol"] == final.metrics["protocol"]  # the same seeds, envs and step limit
    # the two checkpoints act differently: the candidate really is step 1's weights, not the final ones
    assert kept.metrics["action_mae"] != final.metrics["action_mae"]
    better = min((kept, final), key=lambda r: (-r.metrics["successes"], r.metrics["val_loss_at_step"]))
    chosen = select(SelectParams(env_id=ENV_ID), root=data["root"], verifications=[final.uri, kept.uri])
    assert chosen.metrics["verify"] == better.uri and chosen.metrics["step"] == better.metrics["checkpoint_step"]
    assert set(s3_keys(chosen.uri)) >= {"manifest.json", "selection.json", "selection.png"}
    with pytest.raises(ValueError, match="keeps no checkpoint of step 3: it keeps steps 1, 2"):
        verify(dataclasses.replace(params, step=3), root=data["root"], checkpoint=trained.uri, holdout=data["holdout"])


def test_a_promoted_kept_checkpoint_is_what_latest_serves_and_warm_starts_from(trained, data, tmp_path):
    """latest names the train artifact and the step: serve and `pretrained_uri=latest` load step 1, not the final."""
    from tasks.core.checkpoints import fetch_checkpoint
    from tasks.policy.loading import load_policy
    from tasks.serve import resolve_checkpoint, served_protocol
    from tasks.train import resolve_initial_weights

    store = ArtifactStore(data["root"])
    passed = verify(
        VerifyParams(env_id=ENV_ID, holdout_frames=2, episodes=0, max_action_mae=1e6, seed=100, step=1),
        root=data["root"],
        checkpoint=trained.uri,
        holdout=data["holdout"],
    )
    assert passed.metrics["verdict"] == "passed"
    try:
        assert promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=passed.uri).metrics["promoted"]
        latest = store.read_json(latest_uri(store, ENV_ID))
        assert latest["checkpoint"] == trained.uri and latest["step"] == 1
        ref = resolve_checkpoint(store, ENV_ID, None)
        assert ref == f"{trained.uri}@1"
        # the server publishes how latest was verified: a client replans as verify did, on frames rendered alike
        protocol = served_protocol(store, ENV_ID, ref)
        assert protocol["verification"] == passed.uri and protocol["verdict"] == "passed"
        assert protocol["replan_interval"] == HORIZON // 2 and protocol["max_steps"] > 0
        assert (
            protocol["env_kwargs"]["sensor_configs"] == {"shader_pack": "default"} and protocol["camera_size"] is None
        )
        assert served_protocol(store, ENV_ID, trained.uri) is None  # the final checkpoint was not what got verified
        with pytest.raises(ValueError, match="not the served"):
            served_protocol(store, ENV_ID, trained.uri, verification=passed.uri)
        weights, parent = resolve_initial_weights(TrainParams(env_id=ENV_ID, pretrained_uri="latest"), store)
        assert weights == ref and parent.uri == trained.uri
        manifest, ckpt = fetch_checkpoint(store, ref, tmp_path)
        assert ckpt.name == "1" and not (tmp_path / manifest.key / "checkpoint").exists()  # only step 1 was fetched
        policy, _ = load_policy(get_spec(ENV_ID), manifest, ckpt)
        frame = {
            "images": {"base_camera": np.zeros((128, 128, 3), np.uint8)},
            "state": np.zeros(get_spec(ENV_ID).state_dim),
        }
        assert policy.infer(frame)["actions"].shape == (HORIZON, 7)
    finally:
        store.fs.rm(store._path(latest_uri(store, ENV_ID)))


def test_promotion_keeps_the_better_latest_and_refuses_an_incomparable_protocol(trained, data):
    """A passed verification (open-loop threshold, no rollout) is promoted; the rule then guards latest."""
    store = ArtifactStore(data["root"])
    result = verify(
        VerifyParams(env_id=ENV_ID, holdout_frames=2, episodes=0, max_action_mae=1e6, seed=100),
        root=data["root"],
        checkpoint=trained.uri,
        holdout=data["holdout"],
    )
    assert result.metrics["verdict"] == "passed" and result.metrics["harness"] is None
    # the default step limit follows the data: the longest training episode after conversion, plus 15 %
    longest = result.metrics["longest_training_episode"]
    assert result.metrics["protocol"]["max_steps"] == int(np.ceil(longest * 1.15)) and longest > 50
    try:
        first = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=result.uri)
        latest = store.read_json(latest_uri(store, ENV_ID))
        assert first.metrics["promoted"] and latest["checkpoint"] == trained.uri and latest["verify"] == result.uri
        assert latest["protocol"] == result.metrics["protocol"] and latest["verdict"] == "passed"
        again = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=result.uri)
        assert not again.metrics["promoted"] and again.metrics["reason"] == "already latest"

        # A current latest measured under another protocol: not comparable, kept, and the reason says what differs.
        other = {
            **latest,
            "verify": data["root"] + "/PickCube-v1/verify/other",
            "checkpoint": "s3://elsewhere/ckpt",
            "protocol": {**latest["protocol"], "max_steps": 300},
        }
        store.write_json(latest_uri(store, ENV_ID), other)
        refused = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=result.uri)
        assert not refused.metrics["promoted"] and "another protocol" in refused.metrics["reason"]
        assert "max_steps" in refused.metrics["reason"] and store.read_json(latest_uri(store, ENV_ID)) == other
        # Same protocol, a better current latest: kept.
        better = {**other, "protocol": latest["protocol"], "successes": 5, "episodes": 5}
        store.write_json(latest_uri(store, ENV_ID), better)
        kept = promote(PromoteParams(env_id=ENV_ID), root=data["root"], verification=result.uri)
        assert not kept.metrics["promoted"] and store.read_json(latest_uri(store, ENV_ID)) == better
    finally:
        store.fs.rm(store._path(latest_uri(store, ENV_ID)))


def test_a_run_warm_started_from_a_checkpoint_starts_from_its_weights(trained, data):
    """Initial weights from an earlier train artifact (through openpi's CheckpointWeightLoader), then from `latest`."""
    first = trained.metrics
    assert first["from_scratch"] and first["init"].startswith("from scratch")
    # same seed and data: the first batch is the same, so the probe losses compare like with like
    # with data-loader worker processes, as the production profile runs (2): same first batch, same order
    warm = train(
        TrainParams(env_id=ENV_ID, steps=1, action_horizon=HORIZON, pretrained_uri=trained.uri, num_workers=2),
        root=data["root"],
        dataset=data["dataset"],
        stats=data["stats"],
    )
    m = warm.metrics
    assert not warm.cache_hit and not m["from_scratch"] and m["init"] == f"warm start from {trained.uri}"
    # what was loaded, exactly: every array of the tiny model from the parent, none left at random (a scratch run: none)
    loaded, scratch = m["weights_loaded"], first["weights_loaded"]
    assert loaded["arrays_loaded"] > 20 and loaded["arrays_initialised"] == 0
    assert scratch["arrays_loaded"] == 0 and scratch["arrays_initialised"] == loaded["arrays_loaded"]
    assert scratch["values_initialised"] == loaded["values_loaded"] > 1_000_000
    assert m["probe_loss_initial"] == pytest.approx(first["probe_loss_final"], rel=1e-4, abs=1e-5)
    assert abs(m["probe_loss_initial"] - first["probe_loss_initial"]) > 1e-3  # not the random-init loss
    store = ArtifactStore(data["root"])
    manifest = store.require(warm.uri)
    assert trained.uri in manifest.parents and manifest.params["pretrained_uri"] == trained.uri
    # `latest` resolves to the promoted checkpoint: the same inputs as naming it, so the same artifact
    store.write_json(latest_uri(store, ENV_ID), {"env_id": ENV_ID, "checkpoint": trained.uri})
    try:
        via_latest = train(
            TrainParams(env_id=ENV_ID, steps=1, action_horizon=HORIZON, pretrained_uri="latest"),
            root=data["root"],
            dataset=data["dataset"],
            stats=data["stats"],
        )
    finally:
        store.fs.rm(store._path(latest_uri(store, ENV_ID)))
    assert via_latest.cache_hit and via_latest.uri == warm.uri
    with pytest.raises(TrainError, match="no checkpoint of PickCube-v1 has been promoted"):
        train(
            TrainParams(env_id=ENV_ID, steps=1, pretrained_uri="latest"),
            root=data["root"],
            dataset=data["dataset"],
            stats=data["stats"],
        )


def test_real_presets_refuse_the_offline_tokenizer_and_unreachable_weights(data, monkeypatch, tmp_path):
    """lora/full need the real PaliGemma tokenizer and real weights: both refused in seconds, before any compute."""
    pi0_base = "gs://openpi-assets/checkpoints/pi0_base/params"
    for preset, init in (("lora", {"pretrained_uri": pi0_base}), ("full", {"from_scratch": True})):
        t0 = time.monotonic()
        with pytest.raises(TrainError, match="offline stand-in tokenizer"):
            train(
                TrainParams(env_id=ENV_ID, preset=preset, steps=1, **init),
                root=data["root"],
                dataset=data["dataset"],
                stats=data["stats"],
            )
        assert time.monotonic() - t0 < 10
    # A cache that holds a (real-looking) tokenizer, no pi0_base and no network: refused naming the weights.
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "openpi"))
    from tasks.policy.tokenizer import tokenizer_path

    tokenizer_path().parent.mkdir(parents=True)
    tokenizer_path().write_bytes(b"not the stand-in")
    t0 = time.monotonic()
    with pytest.raises(TrainError, match="storage.googleapis.com is unreachable"):
        train(
            TrainParams(
                env_id=ENV_ID, preset="lora", steps=1, pretrained_uri="gs://openpi-assets/checkpoints/pi0_base/params"
            ),
            root=data["root"],
            dataset=data["dataset"],
            stats=data["stats"],
        )
    assert time.monotonic() - t0 < 30
    # Weights within reach (none: full from scratch) on a worker whose JAX sees no GPU: refused before compiling.
    t0 = time.monotonic()
    with pytest.raises(TrainError, match="would train on JAX's CPU backend"):
        train(
            TrainParams(env_id=ENV_ID, preset="full", steps=1, from_scratch=True),
            root=data["root"],
            dataset=data["dataset"],
            stats=data["stats"],
        )
    assert time.monotonic() - t0 < 30
    assert not s3_keys(data["root"] + f"/{ENV_ID}/{PROGRESS_STAGE}")


def test_norm_stats_width_mismatch_is_refused_before_training(data, tmp_path):
    from openpi.shared import normalize

    bad = tmp_path / "bad_stats"
    normalize.save(
        bad,
        {
            "state": normalize.NormStats(mean=np.zeros(18), std=np.ones(18)),
            "actions": normalize.NormStats(mean=np.zeros(7), std=np.ones(7)),
        },
    )
    store = ArtifactStore(data["root"])
    bad_uri = publish_dir(store, ENV_ID, "stats", bad, tag="width-18")
    before = s3_keys(data["root"] + f"/{ENV_ID}/train")
    t0 = time.monotonic()
    with pytest.raises(TrainError, match="state width 18 != model input width 19"):
        train(TrainParams(env_id=ENV_ID, steps=1), root=data["root"], dataset=data["dataset"], stats=bad_uri)
    assert time.monotonic() - t0 < 60
    assert s3_keys(data["root"] + f"/{ENV_ID}/train") == before  # nothing written, not even a partial checkpoint
    assert not s3_keys(data["root"] + f"/{ENV_ID}/{PROGRESS_STAGE}")


def test_killed_training_resumes_from_its_last_checkpoint(data, tmp_path):
    """Resume points upload while training goes on; SIGKILL with one in flight; the rerun continues from the newest
    complete one, not from scratch, and the checkpoint kept before the kill (keep_period) comes back from its resume
    point into the artifact.

    The training process reaches S3 through a proxy that delays every chunk, so an upload takes seconds while a step
    of the tiny model takes a fraction of one: the loop must log step 2 while step 1's checkpoint is still uploading.
    """
    from tests.fixtures.faults import FlakyProxy

    root = data["root"]
    host, port = os.environ["AWS_ENDPOINT_URL_S3"].removeprefix("http://").split(":")
    proxy = FlakyProxy((host, int(port)), latency=0.01).up()
    params = ["--env-id", ENV_ID, "--steps", "4", "--save-interval", "1", "--keep-period", "2", "--seed", "7"]
    log_path = tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.train", "--root", root, "--dataset", data["dataset"], "--stats", data["stats"]]
        + [*params, "--action-horizon", str(HORIZON)],
        cwd=PROJECT,
        env={**os.environ, "AWS_ENDPOINT_URL_S3": proxy.url},
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    store = ArtifactStore(root)
    progress_root = f"{root}/{ENV_ID}/{PROGRESS_STAGE}"

    def uploading(step: int) -> bool:
        keys = s3_keys(progress_root)
        return any(f"/{step}/" in k for k in keys) and not any(k.endswith(f"/{step}/COMPLETE.json") for k in keys)

    seen_step_2_during_upload_1 = False
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if uploading(1) and "step 2/4" in log_path.read_text(errors="replace"):
                seen_step_2_during_upload_1 = True
            if uploading(2) and any(k.endswith("/1/COMPLETE.json") for k in s3_keys(progress_root)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"training ended before it could be interrupted:\n{log_path.read_text()}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.down()
    assert seen_step_2_during_upload_1, log_path.read_text()
    run_dirs = {k.split("/")[0] for k in s3_keys(progress_root)}
    assert len(run_dirs) == 1
    progress_uri = f"{progress_root}/{run_dirs.pop()}"
    assert set(store.complete_trees(progress_uri)) == {"1"}  # step 2's upload was cut: not a resume point

    result = train(
        TrainParams(env_id=ENV_ID, steps=4, save_interval=1, keep_period=2, seed=7, action_horizon=HORIZON),
        root=root,
        dataset=data["dataset"],
        stats=data["stats"],
    )
    assert result.metrics["resumed_from_step"] == 1 and result.metrics["steps"] == 4
    assert result.metrics["checkpoint_steps"] == [2, 4]
    assert [u["step"] for u in result.metrics["resume_point_uploads"]] == [2, 3, 4]
    keys = s3_keys(result.uri)
    assert any(k.startswith("candidates/2/params/") for k in keys)
    log = [
        json.loads(x) for x in store.fs.cat(store._path(result.files_uri) + "/train_log.jsonl").decode().splitlines()
    ]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one curve across both attempts, no restart
    assert not store.complete_trees(progress_uri)


def test_pi05_tiny_trains_with_quantile_norm_reads_state_as_tokens_and_verifies(trained_pi05, data, tmp_path):
    """pi0.5 end to end: openpi's quantile normalisation from our stats' q01/q99, the state in the prompt tokens,
    a checkpoint that create_trained_policy loads with the config that trained it, and a verify run."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tasks.core.checkpoints import fetch_checkpoint
    from tasks.core.specs import get_spec
    from tasks.policy.loading import load_policy

    m = trained_pi05.metrics
    assert m["model"] == "pi05" and m["config_name"] == "pi05_tiny_pickcube_v1" and m["steps"] == 2
    assert m["normalization"] == "quantile (q01/q99)" and np.isfinite(m["final_loss"])
    store = ArtifactStore(data["root"])
    manifest, ckpt = fetch_checkpoint(store, trained_pi05.uri, tmp_path)
    assert manifest.params["model"] == "pi05"
    policy, config = load_policy(get_spec(ENV_ID), manifest, ckpt)
    assert config.model.pi05 and config.policy_metadata["model"] == "pi05"
    _, holdout_dir = store.fetch(data["holdout"], tmp_path)
    dataset = LeRobotDataset("maniskill/holdout", root=holdout_dir)
    frames = [dataset[i] for i in (0, len(dataset) - 1)]
    obs = [
        {
            "images": {"base_camera": f["observation.images.base_camera"].numpy()},
            "state": f["observation.state"].numpy(),
        }
        for f in frames
    ]
    out = policy.infer(obs[0])
    assert out["actions"].shape == (HORIZON, 7) and np.isfinite(out["actions"]).all()
    # pi0.5 sees the state only through the prompt: two states, two token sequences
    tokens = [policy._input_transform(dict(o))["tokenized_prompt"] for o in obs]
    assert not np.array_equal(tokens[0], tokens[1])
    # two envs in worker processes, one batched policy call for both per replanning step
    result = verify(
        VerifyParams(env_id=ENV_ID, holdout_frames=2, episodes=2, max_steps=10, seed=100, envs=2),
        root=data["root"],
        checkpoint=trained_pi05.uri,
        holdout=data["holdout"],
    )
    v = result.metrics
    assert v["train"]["model"] == "pi05" and v["output_shape"] == [HORIZON, 7] and v["finite"] and v["episodes"] == 2
    assert v["harness"]["ok"] and v["verdict"] == "unchecked" and v["eval_envs"] == 2 and v["episodes_per_minute"] > 0
    episodes = json.loads(store.fs.cat(store._path(result.files_uri) + "/metrics.json"))
    assert [e["seed"] for e in episodes["closed_loop_episodes"]] == [EVAL_SEED_BASE + 100, EVAL_SEED_BASE + 101]
    assert all(e["steps"] == 10 for e in episodes["closed_loop_episodes"])


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_checkpoint_is_servable_by_openpi_websocket_policy_server(family, request, data):
    """`python -m tasks.serve` (openpi's WebsocketPolicyServer) answers openpi_client with a (H, 7) chunk."""
    trained = request.getfixturevalue("trained" if family == "pi0" else "trained_pi05")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from openpi_client import websocket_client_policy

    from tests.fixtures.deployment import free_port

    port = free_port()
    log_path = Path(os.environ["PIPELINE_WORK_DIR"]) / "serve.log"
    log = open(log_path, "w")  # a file, not a pipe: a chatty server must never block on a full pipe
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasks.serve",
            "--root",
            data["root"],
            "--env-id",
            ENV_ID,
            "--checkpoint",
            trained.uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=PROJECT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        store = ArtifactStore(data["root"])
        _, holdout_dir = store.fetch(data["holdout"], Path(os.environ["PIPELINE_WORK_DIR"]) / "serve-test")
        frame = LeRobotDataset("maniskill/holdout", root=holdout_dir)[0]
        deadline = time.monotonic() + 300
        while True:  # the server loads the checkpoint first, then listens
            assert server.poll() is None, f"server exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "server did not listen within 300 s"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)
        metadata = client.get_server_metadata()
        assert metadata["checkpoint"] == trained.uri and metadata["model"] == family
        out = client.infer(
            {
                "images": {"base_camera": frame["observation.images.base_camera"].numpy()},
                "state": frame["observation.state"].numpy(),
            }
        )
        assert out["actions"].shape == (HORIZON, 7) and np.isfinite(out["actions"]).all()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
