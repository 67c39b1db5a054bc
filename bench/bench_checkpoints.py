"""C1: what a resume point costs the training loop, inline upload (before) against background upload (now), and what
resume points cost a production run in bytes.

    python -m bench.bench_checkpoints [steps] [save_interval] [latency_s]

Measured: the tiny preset trains `steps` steps with a resume point every `save_interval` steps into an S3 server on
loopback (moto), reached through a proxy that delays every 64 KB chunk by `latency_s` (0.005 s: ~13 MB/s, a remote
bucket's pace), once with `upload_inline` (the loop waits for orbax and the upload at every save: the behaviour before
background uploads) and once as the stage runs now. Same data, seed and steps, one after the other in this process.
Reported: the median seconds the loop stood still per save, the time it waited for uploads, and the stage's wall
time; ratio = inline wall time / background wall time.

Computed (nothing allocated: `jax.eval_shape` of the state the loop would save): the checkpoint bytes of pi0 lora and
full at production size, and per run the bytes the resume points write and the peak bytes they hold in the store,
before (every resume point kept until the artifact is published) and now (the newest, the one uploading and the
kept ones).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from bench.common import ENV_ID, report

# A production run as the production profile resolves it for 200 PickCube demos (~14k frames): data-sized steps, a
# resume point every 1000 steps, kept checkpoints every sixth of the run.
PRODUCTION_FRAMES = 14_000


def checkpoint_bytes(preset: str, model: str = "pi0") -> dict:
    """Bytes of one checkpoint as the loop saves it (openpi's `params` item + `train_state` item), from shapes."""
    import jax

    from tasks.core.params import TrainParams
    from tasks.train import _Loop, openpi_train_config

    params = TrainParams(env_id=ENV_ID, preset=preset, model=model, pretrained_uri="base")
    config = openpi_train_config(params)
    shape = _Loop(config).init_state(jax.random.key(0), for_restore=True)

    def nbytes(tree) -> int:
        return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))

    inference = nbytes(shape.params if shape.ema_params is None else shape.ema_params)
    optimizer = nbytes(shape.opt_state)
    raw = nbytes(shape.params) if shape.ema_params is not None else 0  # with EMA, train_state keeps the raw params
    return {"params": inference, "train_state": optimizer + raw, "total": inference + optimizer + raw}


def production_costs(preset: str) -> dict:
    from tasks.core.params import candidate_steps
    from tasks.core.run_config import RunConfig

    params = RunConfig.build({"preset": preset}, profile="production").train_params()
    steps = params.resolved_steps(PRODUCTION_FRAMES)
    saves = len(range(params.save_interval, steps + 1, params.save_interval)) or 1
    kept = len(candidate_steps(params, steps))
    size = checkpoint_bytes(preset)
    return {
        "preset": preset,
        "steps": steps,
        "resume_points": saves,
        "kept": kept,
        "checkpoint_gb": size["total"] / 1e9,
        "params_gb": size["params"] / 1e9,
        "written_tb": saves * size["total"] / 1e12,
        "peak_before_tb": saves * size["total"] / 1e12,
        "peak_now_tb": (2 + kept) * size["total"] / 1e12,
    }


def measure(steps: int, save_interval: int, latency: float, proxy, root: str) -> dict:
    """The same training twice on `root` (an S3 store behind `proxy`): uploads inline, then in the background."""
    from tasks.convert import ConvertParams, convert
    from tasks.core.params import TrainParams
    from tasks.core.store import ArtifactStore
    from tasks.download import DownloadParams, download
    from tasks.render import RenderParams, render
    from tasks.stats import StatsParams, stats
    from tasks.train import train

    demos = download(DownloadParams(env_id=ENV_ID, count=3, seed=0), root=root)
    shard = render(RenderParams(env_id=ENV_ID), root=root, demos=demos.uri)
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[shard.uri])
    norm = stats(StatsParams(env_id=ENV_ID), root=root, dataset=dataset.uri)
    runs = {}
    for label, inline in (("inline", True), ("background", False)):
        params = TrainParams(
            env_id=ENV_ID, steps=steps, batch_size=1, save_interval=save_interval, seed=3, upload_inline=inline
        )
        proxy.latency = latency
        t0 = time.perf_counter()
        result = train(params, root=root, dataset=dataset.uri, stats=norm.uri)
        runs[label] = {"wall_s": time.perf_counter() - t0, **result.metrics}
        proxy.latency = 0.0
        ArtifactStore(root).delete_tree(result.uri)  # upload_inline is not in the key: the next run must not reuse it
    return runs


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    save_interval = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    latency = float(sys.argv[3]) if len(sys.argv) > 3 else 0.005

    import boto3
    from moto.server import ThreadedMotoServer

    from tests.fixtures.faults import FlakyProxy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FlakyProxy((host, port)).up()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=proxy.url,
    )
    boto3.client("s3").create_bucket(Bucket="bench")
    try:
        runs = measure(steps, save_interval, latency, proxy, "s3://bench/runs")
    finally:
        proxy.down()
        server.stop()

    costs = [production_costs(p) for p in ("lora", "full")]
    rows = []
    for label in ("inline", "background"):
        r = runs[label]
        rows += [
            (f"{label}: stage wall time ({steps} steps, save every {save_interval})", r["wall_s"], "s"),
            (f"{label}: loop stood still per save (median)", r["save_blocking_s"], "s"),
            (f"{label}: waited for uploads (total)", r["upload_wait_s"], "s"),
        ]
    rows.append(("tiny checkpoint", runs["background"]["resume_point_uploads"][-1]["mb"], "MB"))
    for c in costs:
        rows += [
            (
                f"{c['preset']}: checkpoint at production size (params {c['params_gb']:.1f} GB)",
                c["checkpoint_gb"],
                "GB",
            ),
            (
                f"{c['preset']}: resume points written per run ({c['resume_points']} of {c['steps']} steps)",
                c["written_tb"],
                "TB",
            ),
            (f"{c['preset']}: peak held before (all until publish)", c["peak_before_tb"], "TB"),
            (f"{c['preset']}: peak held now (newest + uploading + {c['kept']} kept)", c["peak_now_tb"], "TB"),
        ]
    report(
        "C1 resume points: inline vs background upload",
        rows,
        runs["inline"]["wall_s"] / runs["background"]["wall_s"],
        1.0,
    )
    print(json.dumps(costs, indent=2))


if __name__ == "__main__":
    main()
