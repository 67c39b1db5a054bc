"""The whole pipeline for one task by calling the stage functions directly, in order, without Airflow.

download -> render (train shards + held-out shard) -> convert (train, held-out) -> stats -> train ->
verify -> promote -> run report; the same functions and shard plan the DAG uses, so artifacts are shared with DAG
runs (cache hits either way). Used to benchmark Airflow's overhead and to debug a stage by hand.
"""

from __future__ import annotations

import argparse
import json
import time

from tasks import run_report
from tasks.common import default_root
from tasks.convert import ConvertParams, convert
from tasks.download import DownloadParams, download
from tasks.promote import PromoteParams, promote
from tasks.render import RenderParams, plan_shards, render
from tasks.stats import StatsParams, stats
from tasks.train import TrainParams, train
from tasks.verify import VerifyParams, verify


def run_pipeline(env_id: str, root: str, *, count: int = 4, holdout: int = 1, seed: int = 0, source: str = "motionplanning",
                 episodes_per_shard: int = 50, action_horizon: int = 10, preset: str = "tiny", steps: int = 4,
                 batch_size: int = 1, eval_episodes: int = 2, eval_max_steps: int = 0, holdout_frames: int = 4) -> dict:
    t0 = time.monotonic()
    results = {}

    def step(name: str, result):
        results[name] = result
        state = "cache hit" if result.cache_hit else f"done in {result.seconds:.1f}s"
        print(f"==> {name:<16} {state:<18} {result.uri}", flush=True)
        return result

    demos = step("download", download(DownloadParams(env_id=env_id, count=count + holdout, seed=seed, source=source), root=root))
    train_n = demos.metrics["episodes"] - holdout
    rendered = {"train": [], "holdout": []}
    for i, shard in enumerate(plan_shards(train_n, holdout, episodes_per_shard)):
        r = step(f"render[{i}]", render(RenderParams(env_id=env_id, shard_start=shard["start"], shard_stop=shard["stop"]),
                                        root=root, demos=demos.uri))
        rendered[shard["split"]].append(r.uri)
    dataset = step("convert", convert(ConvertParams(env_id=env_id), root=root, rendered=rendered["train"]))
    held_out = step("convert_holdout", convert(ConvertParams(env_id=env_id), root=root, rendered=rendered["holdout"]))
    norm = step("stats", stats(StatsParams(env_id=env_id, action_horizon=action_horizon), root=root, dataset=dataset.uri))
    ckpt = step("train", train(TrainParams(env_id=env_id, preset=preset, steps=steps, batch_size=batch_size,
                                           action_horizon=action_horizon, seed=seed), root=root, dataset=dataset.uri, stats=norm.uri))
    checked = step("verify", verify(VerifyParams(env_id=env_id, episodes=eval_episodes, max_steps=eval_max_steps,
                                                 holdout_frames=holdout_frames, seed=seed), root=root,
                                    checkpoint=ckpt.uri, holdout=held_out.uri))
    step("promote", promote(PromoteParams(env_id=env_id), root=root, verification=checked.uri))
    # the same run report the DAG's last task writes (this run's stage durations and cache hits)
    run_id = f"direct__{time.strftime('%Y-%m-%dT%H%M%S', time.gmtime())}"
    rows = run_report.stage_rows({name: r.to_dict() for name, r in results.items()})
    report = step("report", run_report.run_report(run_report.RunReportParams(env_id=env_id, run_id=run_id), root=root,
                                                  verification=checked.uri, stages=rows))
    print(f"==> run report: {report.metrics['report']}", flush=True)
    print(f"==> finished in {time.monotonic() - t0:.1f}s", flush=True)
    return {name: r.to_dict() for name, r in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="PickCube-v1")
    parser.add_argument("--root", default=default_root(), help="artifact root (file:///dir or s3://bucket/prefix)")
    parser.add_argument("--count", type=int, default=4, help="training demos")
    parser.add_argument("--holdout", type=int, default=1, help="held-out demos for verify")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="motionplanning", choices=["motionplanning", "hub", "s3"])
    parser.add_argument("--episodes-per-shard", type=int, default=50)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--eval-max-steps", type=int, default=0)
    args = parser.parse_args(argv)
    summary = run_pipeline(args.env_id, args.root, count=args.count, holdout=args.holdout, seed=args.seed, source=args.source,
                           episodes_per_shard=args.episodes_per_shard, preset=args.preset, steps=args.steps,
                           eval_episodes=args.eval_episodes, eval_max_steps=args.eval_max_steps)
    print(json.dumps({k: {"uri": v["uri"], "cache_hit": v["cache_hit"]} for k, v in summary.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
