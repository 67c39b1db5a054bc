"""docker-compose.yaml: valid for Compose (Debian's docker-compose runs `config` without a daemon) and
wired as the Airflow 3 CeleryExecutor topology plus our services."""

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import PROJECT

COMPOSE = PROJECT / "docker-compose.yaml"


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The file as Compose resolves it (anchors, merges, env defaults)."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; tools/setup_system.sh installs it")
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_has_the_airflow_3_celery_topology_and_ours(resolved):
    services = resolved["services"]
    assert {"postgres", "redis", "minio", "minio-init", "airflow-init", "api-server", "scheduler", "dag-processor",
            "triggerer", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis")
        assert "airflow-init" in services[name]["depends_on"]
        assert not any(k.startswith("AWS_") for k in env)  # S3 credentials only through the Airflow connection


def test_gpu_worker_serves_the_gpu_queue_with_a_gpu(resolved):
    gpu = resolved["services"]["worker-gpu"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["shm_size"]
    cpu = resolved["services"]["worker-cpu"]
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "default"


def test_init_migrates_and_creates_the_gpu_pool_and_s3_connection(resolved):
    script = " ".join(resolved["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in script and "pools set gpu" in script and "connections add pipeline_s3" in script
    assert "mc mb" in " ".join(resolved["services"]["minio-init"]["entrypoint"])
