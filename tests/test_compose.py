"""docker-compose.yaml: valid for Compose (Debian's docker-compose runs `config` without a daemon) and
wired as the Airflow 3 CeleryExecutor topology plus our services."""

import re
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
    assert {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "airflow-init",
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker-cpu",
        "worker-gpu",
    } <= set(services)
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


def test_services_recover_on_their_own(resolved):
    """Restart policies, a heartbeat timeout shorter than Airflow's 300 s, warm-shutdown grace for the workers, and a
    broker visibility timeout longer than the longest task (no second start of a running training)."""
    services = resolved["services"]
    for name in (
        "postgres",
        "redis",
        "minio",
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker-cpu",
        "worker-gpu",
    ):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["airflow-init"]["restart"] == "no"
    env = services["scheduler"]["environment"]
    assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) >= 12 * 3600
    for name, at_least in (("worker-cpu", 600), ("worker-gpu", 1800)):
        grace = services[name]["stop_grace_period"]  # compose prints durations like "15m0s" or seconds
        seconds = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", str(grace)))
        assert seconds >= at_least, (name, grace)
