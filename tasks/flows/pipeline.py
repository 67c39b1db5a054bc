"""The whole pipeline for one task by calling the stage functions directly, in order, without Airflow.

download -> render (held-out shard + train shards) -> convert (train, held-out) -> stats -> train ->
verify (each kept checkpoint) -> select -> confirm (verify the chosen one on the protocol's seeds) -> promote ->
run report, driven by the same typed run config (tasks/core/run_config.py) and shard plan
the DAGs use, so artifacts are shared with DAG runs (cache hits either way). Used to benchmark Airflow's
overhead and to debug a stage by hand:

    python -m tasks.flows.pipeline --profile demo --set steps=10 --set demo_count=8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from tasks import run_report
from tasks.convert import convert
from tasks.core.cli import configure_logging, first_paragraph
from tasks.core.run_config import PROFILES, RunConfig, active_profile
from tasks.download import download
from tasks.promote import promote
from tasks.render import plan_shards, render
from tasks.select_checkpoint import SelectParams, select
from tasks.stats import stats
from tasks.train import train
from tasks.verify import verdict_line, verify


def run_pipeline(config: RunConfig) -> dict:
    t0 = time.monotonic()
    root = config.artifact_root
    results = {}

    def step(name: str, result):
        results[name] = result
        state = "cache hit" if result.cache_hit else f"done in {result.seconds:.1f}s"
        print(f"==> {name:<16} {state:<18} {result.uri}", flush=True)
        return result

    demos = step("download", download(config.download_params(), root=root))
    train_n = demos.metrics["episodes"] - config.holdout_count
    rendered = {"train": [], "holdout": []}
    for i, shard in enumerate(plan_shards(train_n, config.holdout_count, config.episodes_per_shard)):
        r = step(
            f"render[{i}]", render(config.render_params(shard["start"], shard["stop"]), root=root, demos=demos.uri)
        )
        rendered[shard["split"]].append(r.uri)
    dataset = step("convert", convert(config.convert_params(), root=root, rendered=rendered["train"]))
    held_out = step("convert_holdout", convert(config.convert_params(), root=root, rendered=rendered["holdout"]))
    norm = step("stats", stats(config.stats_params(), root=root, dataset=dataset.uri))
    ckpt = step(
        "train", train(config.train_params(), root=root, dataset=dataset.uri, stats=norm.uri, holdout=held_out.uri)
    )
    steps = ckpt.metrics.get("checkpoint_steps") or [ckpt.metrics["steps"]]
    scored = config.verify_params(selection=len(steps) > 1)  # several: selection seeds, confirmed below
    checked = []
    for i, s in enumerate(steps):
        checked.append(
            step(
                f"verify[{i}]",
                verify(dataclasses.replace(scored, step=s), root=root, checkpoint=ckpt.uri, holdout=held_out.uri),
            )
        )
        print(f"==> step {s}: {verdict_line(checked[-1].metrics)}", flush=True)
    chosen = step(
        "select", select(SelectParams(env_id=config.env_id), root=root, verifications=[c.uri for c in checked])
    )
    print(f"==> {chosen.metrics['reason']}", flush=True)
    confirmed = step(
        "confirm",
        verify(config.verify_params(), root=root, checkpoint=chosen.metrics["checkpoint"], holdout=held_out.uri),
    )
    print(f"==> {verdict_line(confirmed.metrics)}", flush=True)
    step("promote", promote(config.promote_params(), root=root, verification=confirmed.uri))
    # the same run report the DAG's last task writes (this run's stage durations and cache hits)
    run_id = f"direct__{time.strftime('%Y-%m-%dT%H%M%S', time.gmtime())}"
    rows = run_report.stage_rows({name: r.to_dict() for name, r in results.items()})
    report = step(
        "report",
        run_report.run_report(
            run_report.RunReportParams(env_id=config.env_id, run_id=run_id),
            root=root,
            verification=confirmed.uri,
            stages=rows,
            selection=chosen.uri,
            promotion=results["promote"].metrics,
        ),
    )
    print(f"==> run report: {report.metrics['report']}", flush=True)
    print(f"==> finished in {time.monotonic() - t0:.1f}s", flush=True)
    return {name: r.to_dict() for name, r in results.items()}


def parse_settings(items: list[str]) -> dict:
    """`key=value` pairs; values parsed as JSON when they are JSON (numbers, true/false, null)."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.flows.pipeline", description=first_paragraph(__doc__))
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="run defaults: production (openpi's LoRA recipe from pi0_base) or demo (tiny, CPU); "
        "default: $PIPELINE_PROFILE, else production",
    )
    parser.add_argument(
        "--env-id",
        default=None,
        help="ManiSkill task (registered in tasks/core/specs.py; default: the profile's env_id)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="artifact root (file:///dir or s3://bucket/prefix; default: the profile's artifact_root)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any run setting of tasks/core/run_config.py, e.g. --set steps=10 --set demo_count=8; "
        "repeatable, values parsed as JSON when possible (default: none)",
    )
    args = parser.parse_args(argv)
    values = parse_settings(args.set)
    if args.env_id:
        values["env_id"] = args.env_id
    if args.root:
        values["artifact_root"] = args.root
    config = RunConfig.build(values, profile=args.profile or active_profile())
    summary = run_pipeline(config)
    print(json.dumps({k: {"uri": v["uri"], "cache_hit": v["cache_hit"]} for k, v in summary.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
