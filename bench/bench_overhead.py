"""P4: the whole pipeline by calling the stage functions directly vs through the DAG (`dag.test()`).

Both sides run every stage from scratch on their own fresh artifact root, same params, same demos
(same seed), one after the other in this process tree. Goal: DAG overhead <= 5 % + 20 s.
Usage: python -m bench.bench_overhead [demo_count] [eval_episodes]  (the test tier's smoke run uses 0 episodes:
verify still runs, open-loop only, so no stage is skipped)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ENV_ID, OUT, timer

PROJECT = Path(__file__).resolve().parent.parent
PARAMS = {"holdout_count": 1, "steps": 2, "eval_episodes": 1, "eval_max_steps": 20}


def fresh_root(name: str) -> str:
    path = OUT / "overhead" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return f"file://{path}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    count = int(argv[0]) if argv else 4
    episodes = int(argv[1]) if len(argv) > 1 else PARAMS["eval_episodes"]
    direct_root, dag_root = fresh_root("direct"), fresh_root("dag")
    # Each side in its own process, so neither inherits the other's imports or JAX compilation cache.
    jax_cache = tempfile.mkdtemp(prefix="jax-")
    # Same private tokenizer cache for both sides (the offline stand-in the tiny preset uses).
    os.environ["OPENPI_DATA_HOME"] = str(PROJECT / ".cache" / "demo" / "openpi")
    from tasks.policy.tokenizer import seed_offline_tokenizer

    seed_offline_tokenizer()
    settings = {**PARAMS, "demo_count": count, "eval_episodes": episodes}
    env_direct = f"PIPELINE_JAX_CACHE={jax_cache}-a"
    env_dag = f"PIPELINE_JAX_CACHE={jax_cache}-b"
    with timer() as direct:
        subprocess.run(
            f"{env_direct} {sys.executable} -m tasks.flows.pipeline --profile demo --env-id {ENV_ID} --root {direct_root} "
            + " ".join(f"--set {k}={v}" for k, v in settings.items()),
            shell=True,
            check=True,
            cwd=PROJECT,
        )
    with timer() as via_dag:
        subprocess.run(
            f"{env_dag} {sys.executable} tools/demo_run.py --env-id {ENV_ID} --root {dag_root} "
            + " ".join(f"--conf {k}={v}" for k, v in settings.items()),
            shell=True,
            check=True,
            cwd=PROJECT,
        )
    overhead = via_dag["s"] - direct["s"]
    allowed = 0.05 * direct["s"] + 20
    name = (
        f"P4 pipeline overhead, {ENV_ID}, {count}+{PARAMS['holdout_count']} demos, tiny preset {PARAMS['steps']} steps"
    )
    print(f"\n{name}")
    for label, value in (
        ("stage functions called directly (tasks.flows.pipeline)", direct["s"]),
        ("through the DAG (dag.test, SQLite)", via_dag["s"]),
        ("overhead", overhead),
        ("allowed: 5 % + 20 s", allowed),
    ):
        print(f"  {label:<48} {value:10.2f} s")
    print(
        f"  {'ratio (DAG / direct)':<48} {via_dag['s'] / direct['s']:10.3f} x   -> {'within' if overhead <= allowed else 'OVER'} the goal"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "results.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "name": name,
                    "direct_s": direct["s"],
                    "dag_s": via_dag["s"],
                    "overhead_s": overhead,
                    "allowed_s": allowed,
                }
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
