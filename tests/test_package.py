"""The project as an installable package: what `pip install .` puts into an Airflow image.

A wheel built from the source holds every stage, the core, policy and sim libraries and the DAG-side building blocks,
and declares one console script per stage CLI; the installed scripts run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from tests.conftest import PROJECT

DIST = "maniskill-openpi-pipeline"
STAGES = sorted(p.stem for p in (PROJECT / "tasks").glob("*.py") if p.stem != "__init__")


def test_every_stage_has_a_console_script():
    scripts = {ep.name: ep.value for ep in metadata.distribution(DIST).entry_points if ep.group == "console_scripts"}
    for stage in STAGES:
        assert scripts[f"maniskill-openpi-{stage.replace('_', '-')}"] == f"tasks.{stage}:main"
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), name


def test_an_installed_stage_script_runs():
    script = Path(sys.executable).parent / "maniskill-openpi-stats"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--dataset" in done.stdout and "--env-id" in done.stdout


def test_the_wheel_holds_the_stages_and_the_airflow_building_blocks(tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv builds the wheel (tools/setup.sh installs it)"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(PROJECT)], check=True, capture_output=True, timeout=600
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for stage in STAGES:
        assert f"tasks/{stage}.py" in names
    for module in (
        "tasks/core/params.py",
        "tasks/core/stage.py",
        "tasks/policy/configs.py",
        "tasks/sim/rollout.py",
        "tasks/airflow_tasks/__init__.py",
        "tasks/airflow_tasks/stage_tasks.py",
        "tasks/flows/pipeline.py",
    ):
        assert module in names
    assert not any(n.startswith(("tests/", "dags/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "maniskill-openpi-train = tasks.train:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
