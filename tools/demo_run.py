"""The one-command demo: the SFT DAG run in-process by Airflow (`dag.test()`, SQLite metadata DB) under the
demo profile: local artifact root, CPU, the tiny preset, PickCube-v1, a handful of offline demos.

Prints one line per finished task as the run goes, then a stage table (duration, cache hit, artifact),
the run report's path and the key metrics. `python tools/demo_run.py --help` for the knobs; any
`--conf key=value` is passed to the DAG's params form.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAG_ID = "maniskill_openpi_sft"


def _prepare_env(home: Path) -> None:
    # The demo profile (tasks/core/run_config.py): the DAG's params form, parsed below, takes its defaults from it.
    os.environ["PIPELINE_PROFILE"] = "demo"
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT / "plugins"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # The tiny preset trains from scratch with an offline stand-in tokenizer, kept apart from ~/.cache/openpi.
    os.environ.setdefault("OPENPI_DATA_HOME", str(home / "openpi"))
    os.environ.setdefault("PIPELINE_JAX_CACHE", str(home / "jax"))
    os.environ.setdefault("HF_LEROBOT_HOME", str(home / "lerobot"))
    for p in (str(PROJECT), str(PROJECT / "plugins")):
        if p not in sys.path:
            sys.path.insert(0, p)
    os.environ["PYTHONPATH"] = f"{PROJECT}:{PROJECT / 'plugins'}:{os.environ.get('PYTHONPATH', '')}"


def run_demo(conf: dict) -> dict:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tasks.core.run_config import RunConfig
    from tasks.policy.tokenizer import seed_offline_tokenizer

    if conf.get("preset", RunConfig.defaults("demo")["preset"]) == "tiny":
        seed_offline_tokenizer()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    dag = DagBag(dag_folder=str(PROJECT / "dags")).dags[DAG_ID]
    t0 = time.monotonic()
    print(f"==> running {DAG_ID} with {json.dumps(conf)}", flush=True)
    run = dag.test(run_conf=conf)
    wall = time.monotonic() - t0
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=run.run_id).all()
        results = {}
        for ti in sorted(tis, key=lambda t: (t.start_date or 0, t.map_index)):
            row = session.scalars(
                XComModel.get_many(
                    run_id=run.run_id, key="return_value", task_ids=ti.task_id, dag_ids=DAG_ID, map_indexes=ti.map_index
                )
            ).first()
            value = XComModel.deserialize_value(row) if row is not None else None
            name = ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
            results[name] = {
                "state": ti.state,
                "seconds": round(ti.duration or 0, 1),
                "cache_hit": (value or {}).get("cache_hit") if isinstance(value, dict) else None,
                "uri": (value or {}).get("uri") if isinstance(value, dict) else None,
                "metrics": (value or {}).get("metrics") if isinstance(value, dict) else None,
            }
    return {"state": str(run.state), "run_id": run.run_id, "wall_s": round(wall, 1), "tasks": results}


def print_summary(summary: dict) -> None:
    print(f"\n==> DAG run {summary['state']} in {summary['wall_s']} s")
    print(f"{'task':<18} {'state':<9} {'seconds':>8}  {'cache':<9} artifact")
    for name, r in summary["tasks"].items():
        cache = "" if r["cache_hit"] is None else ("hit" if r["cache_hit"] else "built")
        print(f"{name:<18} {r['state']:<9} {r['seconds']:>8}  {cache:<9} {r['uri'] or ''}")
    selection = summary["tasks"].get("select", {}).get("metrics") or {}
    verify = summary["tasks"].get("confirm", {})  # the chosen checkpoint's verification on the protocol's seeds
    if verify.get("uri"):
        m = verify["metrics"]
        run_report = (summary["tasks"].get("report", {}).get("metrics") or {}).get("report")
        report = run_report or (verify.get("files_uri") or verify["uri"]) + "/report.html"
        print(f"\nrun report: {report.removeprefix('file://')}")
        from tasks.verify import verdict_line

        if selection.get("reason"):
            print(f"checkpoint selection: {selection['reason']}")
        print(verdict_line(m))
        print(
            f"held-out action MAE {m.get('action_mae'):.4f}, output {m.get('output_shape')}, "
            f"inference {m.get('latency_ms_median')} ms, step limit {m.get('protocol', {}).get('max_steps')}"
        )
    promote = summary["tasks"].get("promote", {})
    if promote.get("metrics"):
        print(f"promotion: {promote['metrics']['reason']} -> latest = {promote['metrics']['latest_checkpoint']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/demo_run.py", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument(
        "--env-id", default="PickCube-v1", help="registered ManiSkill task to run the demo on (default %(default)s)"
    )
    parser.add_argument(
        "--root",
        default=f"file://{PROJECT / 'artifacts'}",
        help="artifact root URI (file:///dir or s3://bucket/prefix; default %(default)s)",
    )
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any DAG param, e.g. --conf demo_count=8 --conf steps=10 (repeatable; values parsed as JSON "
        "when possible; default: none)",
    )
    parser.add_argument("--json", type=Path, help="also write the run summary to this JSON file (default: not written)")
    args = parser.parse_args(argv)
    _prepare_env(PROJECT / ".cache" / "demo")
    logging.getLogger("airflow").setLevel(logging.WARNING)
    # Airflow's own logging stays at WARNING here (AIRFLOW__LOGGING__LOGGING_LEVEL above), which would also drop the
    # stages' progress lines: they get their own handler, as the stage CLIs print them.
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(message)s"))
    stages_log = logging.getLogger("tasks")
    stages_log.addHandler(progress)
    stages_log.setLevel(logging.INFO)
    stages_log.propagate = False
    conf = {"env_id": args.env_id, "artifact_root": args.root}
    for item in args.conf:
        key, _, value = item.partition("=")
        try:
            conf[key] = json.loads(value)
        except json.JSONDecodeError:
            conf[key] = value
    summary = run_demo(conf)
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if summary["state"] == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
