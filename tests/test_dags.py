"""The Airflow wiring: DAG integrity, the params form, and a real dag.test() run of the data stages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

DAG_ID = "maniskill_openpi_data"


@pytest.fixture(scope="module")
def airflow_db():
    sys.path.insert(0, str(PROJECT / "plugins"))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": f"{PROJECT}:{PROJECT / 'plugins'}"})
    yield


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_stage_order_and_mapping(dagbag):
    dag = dagbag.dags[DAG_ID]
    assert dag.get_task("download").downstream_task_ids == {"plan_shards"}
    assert dag.get_task("plan_shards").downstream_task_ids == {"render"}
    assert dag.get_task("render").downstream_task_ids == {"convert"}
    assert dag.get_task("convert").downstream_task_ids == {"stats"}
    assert "MappedOperator" in type(dag.get_task("render")).__name__  # render is mapped over shards


def test_params_form_validates(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags[DAG_ID].params
    for name in params:
        params.get_param(name).resolve()  # every default is valid
    bad = {"env_id": "PickCub-v1", "demo_count": -3, "control_mode": "pd_teleport", "artifact_root": "../../etc",
           "min_success_ratio": 1.5}
    for name, value in bad.items():
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(value)
    assert all(params.get_param(name).description for name in params)


@pytest.mark.sim
def test_dag_run_produces_all_data_artifacts(dagbag, tmp_path):
    root = f"file://{tmp_path / 'store'}"
    run = dagbag.dags[DAG_ID].test(run_conf={"demo_count": 3, "episodes_per_shard": 2, "artifact_root": root})
    assert run.state == "success"
    manifests = sorted(str(p.relative_to(tmp_path / "store")).split("/")[1] for p in (tmp_path / "store").rglob("manifest.json"))
    assert manifests == ["convert", "download", "render", "render", "stats"]
