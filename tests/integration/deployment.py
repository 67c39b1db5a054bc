"""A real Airflow 3 deployment as processes on loopback: Postgres and Redis from apt, the api-server,
scheduler, dag-processor and two Celery workers (queues `default` and `gpu`), all with this project's
dags/ and plugins/. Used by the integration tier; each service logs to `<base>/logs/<name>.log`.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
CONN_ID = "pipeline_s3"
WANDB_CONN_ID = "pipeline_wandb"
# A made-up W&B API key (40 hex digits, like a real one). W&B runs offline here (no internet), which is set in
# the connection's extra exactly as an air-gapped site would; the key must still never surface anywhere.
WANDB_KEY = "5eb0c4f1d2a39e7b8c6d5e4f3a2b1c0d9e8f7a6b"


def recovery_settings() -> dict[str, str]:
    """docker-compose.yaml's recovery settings (heartbeat timeout, broker visibility timeout), so that the fault
    tests check the values we ship, not Airflow's defaults."""
    import yaml

    env = yaml.safe_load((PROJECT / "docker-compose.yaml").read_text())["x-airflow"]["environment"]
    return {k: str(env[k]) for k in ("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
                                     "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # Postgres refuses to run as root; CI machines often are.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Deployment:
    def __init__(self, base: Path):
        self.base = base
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict | None]] = {}
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.pg_bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
        db = f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}  # S3 creds only via the connection
        env.update({
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tasks.airflow_tasks.glue.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API__BASE_URL": self.api,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            # Only the run the test triggers: no cron run for the latest interval when the DAG is unpaused.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "1800",
            **recovery_settings(),
            "PYTHONPATH": f"{PROJECT}:{PROJECT / 'plugins'}",
        })
        self.env = env

    # ---- processes --------------------------------------------------------------------------------------------------
    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        self.commands[name] = (cmd, env)
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(cmd, cwd=PROJECT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "airflow", *args], cwd=PROJECT, env=self.env,
                              capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def start_postgres(self) -> None:
        # Outside the (0700, root-owned) pytest temp tree, so that the postgres user can reach it.
        data = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        self.pg_data = data
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
        subprocess.run(_as_postgres([str(self.pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust"]),
                       check=True, capture_output=True)
        self._start("postgres", _as_postgres([str(self.pg_bin / "postgres"), "-D", str(data), "-p", str(self.pg_port),
                                              "-c", "listen_addresses=127.0.0.1", "-k", str(data)]))
        self._wait(lambda: subprocess.run([str(self.pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)],
                                          capture_output=True).returncode == 0, "postgres", 60)
        subprocess.run([str(self.pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", "airflow"],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.start_postgres()
        self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        self.airflow("db", "migrate")
        self.airflow("pools", "set", "gpu", "1", "GPU slots: train and verify")
        self._start("api-server", [sys.executable, "-m", "airflow", "api-server", "--port", str(self.api_port), "--host", "127.0.0.1"])
        self._start("scheduler", [sys.executable, "-m", "airflow", "scheduler"])
        self._start("dag-processor", [sys.executable, "-m", "airflow", "dag-processor"])
        for name, queue, concurrency in (("cpu-worker", "default", "2"), ("gpu-worker", "gpu", "1")):
            self._start(name, [sys.executable, "-m", "airflow", "celery", "worker", "--queues", queue,
                               "--concurrency", concurrency, "--celery-hostname", f"{name}@%h"],
                        env={**self.env, "PIPELINE_WORKER_NAME": name})
        self._wait(lambda: self._get("/api/v2/monitor/health", auth=False) is not None, "api-server", 180)

    def crash(self, name: str) -> list[str]:
        """What losing the service's container does: SIGKILL to its whole process tree, task processes included
        (Airflow starts each task in a process group of its own, so killing the service's group would not reach
        them). Returns the killed processes' command lines."""
        import psutil

        root = psutil.Process(self.procs[name].pid)
        tree = [root, *root.children(recursive=True)]
        cmdlines = []
        for proc in tree:
            try:
                cmdlines.append(" ".join(proc.cmdline()))
            except psutil.Error:
                pass
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=30)
        self.procs[name].wait(30)
        return cmdlines

    def processes(self, name: str) -> list[str]:
        """Command lines of a service's process tree (its tasks' processes included)."""
        import psutil

        root = psutil.Process(self.procs[name].pid)
        found = []
        for proc in [root, *root.children(recursive=True)]:
            try:
                found.append(" ".join(proc.cmdline()))
            except psutil.Error:
                pass
        return found

    def restart(self, name: str) -> None:
        """A fresh process of a service, started as the first one was (what a restart policy does)."""
        if self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is still running; crash() or stop it first")
        self._start(name, *self.commands[name])

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if getattr(self, "pg_data", None):
            shutil.rmtree(self.pg_data, ignore_errors=True)

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")
            time.sleep(1)
        raise TimeoutError(f"{what} not ready after {timeout}s")

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- REST API ---------------------------------------------------------------------------------------------------
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            # simple auth manager with all_admins: GET issues a token without credentials
            req = urllib.request.Request(f"{self.api}/auth/token", method="GET")
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.loads(r.read())["access_token"]
        return self._token

    def request(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api}{path}", method=method, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def _get(self, path: str, auth: bool = True):
        try:
            return self.request("GET", path, auth=auth)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        self._wait(lambda: self._get(f"/api/v2/dags/{dag_id}") is not None, f"DAG {dag_id} parsed", timeout)
