"""The render device choice and the software-Vulkan checks (tasks/sim/devices.py), on this machine's real files.

`nvidia-smi` is what tells a GPU worker from a CPU one; these tests put a fake one first on PATH (no GPU here).
"""

from __future__ import annotations

import os
import stat

import pytest

from tasks.sim import devices


def _fake_nvidia_smi(folder, exit_code: int) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho 'GPU 0: fake'\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_auto_is_gpu_only_when_nvidia_smi_lists_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    _fake_nvidia_smi(tmp_path, 0)
    assert devices.resolve_device("auto") == "gpu"
    _fake_nvidia_smi(tmp_path, 9)  # installed, but no device (a driver without a GPU)
    assert devices.resolve_device("auto") == "cpu"
    assert devices.resolve_device("cpu") == "cpu" and devices.resolve_device("gpu") == "gpu"


def test_a_missing_lavapipe_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_LAVAPIPE_ICD", str(tmp_path / "absent.json"))
    assert devices.lavapipe_icd() is None
    with pytest.raises(ValueError, match="tools/setup_system.sh.*PIPELINE_LAVAPIPE_ICD"):
        devices.require_lavapipe(ValueError)
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    with pytest.raises(ValueError, match="render_backend='cpu'.*device=gpu"):
        devices.ensure_software_vulkan("cpu")
    devices.ensure_software_vulkan("gpu")  # a GPU backend needs no software driver
    assert "VK_ICD_FILENAMES" not in os.environ


def test_cpu_rendering_points_vulkan_at_lavapipe(tmp_path, monkeypatch):
    icd = tmp_path / "lvp_icd.json"
    icd.write_text("{}")
    monkeypatch.setenv("PIPELINE_LAVAPIPE_ICD", str(icd))
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    assert devices.require_lavapipe() == icd
    devices.ensure_software_vulkan("cpu")
    assert os.environ["VK_ICD_FILENAMES"] == str(icd)
    monkeypatch.setenv("VK_ICD_FILENAMES", "/chosen/by/the/deployment.json")
    devices.ensure_software_vulkan("cpu")  # a driver the deployment chose is left alone
    assert os.environ["VK_ICD_FILENAMES"] == "/chosen/by/the/deployment.json"


def test_the_project_lavapipe_path_is_where_setup_puts_it():
    assert devices.LAVAPIPE_ICD == devices.PROJECT_ROOT / ".cache" / "mesa" / "lvp_icd.json"
    assert (devices.PROJECT_ROOT / "tools" / "setup_system.sh").is_file()
