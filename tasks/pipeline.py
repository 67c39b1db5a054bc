"""Runs the data stages for one task in order (download -> render shards -> convert -> stats), printing progress.

The same stage functions the Airflow DAG calls; handy for a first run and for benchmarking the stages
without Airflow. Every stage is cached by its inputs, so a rerun with the same arguments is all cache hits.
"""

from __future__ import annotations

import argparse
import json
import time

from tasks.common import default_root
from tasks.convert import ConvertParams, convert
from tasks.download import DownloadParams, download
from tasks.render import RenderParams, render
from tasks.stats import StatsParams, stats


def run_data_stages(env_id: str, root: str, count: int, seed: int, source: str, shards: int, action_horizon: int) -> dict:
    t0 = time.monotonic()
    results = {}

    def step(name: str, result):
        results[name] = result
        state = "cache hit" if result.cache_hit else f"done in {result.seconds:.1f}s"
        print(f"==> {name:<10} {state:<18} {result.uri}", flush=True)
        return result

    demos = step("download", download(DownloadParams(env_id=env_id, count=count, seed=seed, source=source), root=root))
    bounds = [round(i * count / shards) for i in range(shards + 1)]
    rendered = [step(f"render[{i}]", render(RenderParams(env_id=env_id, shard_start=a, shard_stop=b), root=root, demos=demos.uri))
                for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]
    dataset = step("convert", convert(ConvertParams(env_id=env_id), root=root, rendered=[r.uri for r in rendered]))
    step("stats", stats(StatsParams(env_id=env_id, action_horizon=action_horizon), root=root, dataset=dataset.uri))
    summary = {name: {"uri": r.uri, "cache_hit": r.cache_hit, "metrics": r.metrics} for name, r in results.items()}
    print(f"==> finished in {time.monotonic() - t0:.1f}s", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="PickCube-v1")
    parser.add_argument("--root", default=default_root(), help="artifact root (file:///dir or s3://bucket/prefix)")
    parser.add_argument("--count", type=int, default=6, help="number of demos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="motionplanning", choices=["motionplanning", "hub", "s3"])
    parser.add_argument("--shards", type=int, default=1, help="render shards (each a separate render artifact)")
    parser.add_argument("--action-horizon", type=int, default=10)
    args = parser.parse_args(argv)
    summary = run_data_stages(args.env_id, args.root, args.count, args.seed, args.source, args.shards, args.action_horizon)
    print(json.dumps({k: {"uri": v["uri"], "cache_hit": v["cache_hit"]} for k, v in summary.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
