"""The GPU check (tools/gpu_check.sh): refused without a GPU, and its code run at the tiny size on this CPU, so that the
day a GPU is lent the check runs as it is. What it measures there (GPU rendering, lora at production size, batched
evaluation) is in docs/benchmarks.md once it has run."""

import json
import os
import subprocess

import pytest

from tests.conftest import PROJECT

pytestmark = [pytest.mark.sim, pytest.mark.train]


def run_check(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["tools/gpu_check.sh", *args],
        cwd=PROJECT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_a_gpu_the_check_refuses_and_says_why():
    done = run_check("--out", "/dev/null", timeout=300)
    assert done.returncode != 0
    assert "JAX sees no GPU here" in done.stderr and "--cpu-dry-run" in done.stderr, done.stderr[-2000:]


def test_the_cpu_dry_run_trains_from_a_locally_saved_base_checkpoint_and_evaluates(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check("--cpu-dry-run", "--out", str(out), "--work", str(tmp_path / "work"), "--demos", "2")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    figures = json.loads(out.read_text())
    assert figures["backend"] == "cpu" and figures["preset"] == "tiny"
    # lora and full resolved at production size (shapes only): the sizes the checkpoint figures are computed from
    lora, full = figures["production"]["lora"], figures["production"]["full"]
    assert lora["steps_for_14k_frames"] == 13_000 and lora["batch_size"] == 32
    assert 8 < lora["checkpoint_gb"] < 15 and 40 < full["checkpoint_gb"] < 60
    assert figures["render"]["cpu"]["frames"] > 0 and figures["render"]["cpu"]["frames_per_second"] > 0
    train = figures["train"]
    # the base checkpoint went through openpi's CheckpointWeightLoader: every array of the model loaded from it
    assert train["weights_loaded"]["arrays_loaded"] > 20 and train["weights_loaded"]["arrays_initialised"] == 0
    assert train["steps"] == 2 and train["resume_point_uploads"] and train["save_blocking_s"] is not None
    assert figures["eval"]["episodes"] == 2 and figures["eval"]["episodes_per_minute"] > 0
