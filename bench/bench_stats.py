"""P3: norm stats time, our stats vs iterating openpi's data loader frame by frame (same numbers out)."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from bench.common import ENV_ID, OUT, local, rendered, report, timer
from tasks.convert import ConvertParams, write_dataset
from tasks.core.dataset import ACTION_KEY
from tasks.core.specs import get_spec
from tasks.stats import compute_norm_stats

HORIZON = 10
# openpi's loader finds datasets under HF_LEROBOT_HOME, which lerobot reads once at import
os.environ["HF_LEROBOT_HOME"] = str(OUT / "p3")


def loader_stats(repo_root, spec):
    """openpi's compute_norm_stats loop: its LeRobot dataset + transforms, RunningStats over batches of 32."""
    from openpi.models import pi0_config
    from openpi.shared import normalize
    from openpi.training import config as _config
    from openpi.training import data_loader as _data_loader

    from tasks.policy.transforms import data_transforms, repack_transform

    cfg = _config.DataConfig(
        repo_id=f"{repo_root.parent.name}/{repo_root.name}", action_sequence_keys=(ACTION_KEY,), prompt_from_task=True
    )
    ds = _data_loader.TransformedDataset(
        _data_loader.create_torch_dataset(cfg, HORIZON, pi0_config.Pi0Config(action_horizon=HORIZON)),
        [*repack_transform(spec).inputs, *data_transforms(spec).inputs],
    )
    running = {"state": normalize.RunningStats(), "actions": normalize.RunningStats()}
    batch = []
    for i in range(len(ds)):
        batch.append(ds[i])
        if len(batch) == 32 or i == len(ds) - 1:
            for k, rs in running.items():
                rs.update(np.stack([np.asarray(b[k]) for b in batch]))
            batch = []
    return {k: rs.get_statistics() for k, rs in running.items()}, len(ds)


def main(count: int = 20) -> dict:
    import openpi.training.data_loader  # noqa: F401  (import cost is the same for both; keep it out of the timings)

    spec = get_spec(ENV_ID)
    r = rendered(count)
    root = OUT / "p3" / "bench" / "p3ds"
    shutil.rmtree(OUT / "p3", ignore_errors=True)
    write_dataset(spec, [local(r) / "trajectory.h5"], root, "bench/p3ds", ConvertParams(env_id=ENV_ID))
    with timer() as t_loader:
        ref, n = loader_stats(root, spec)
    with timer() as t_ours:
        ours, n2 = compute_norm_stats(spec, root, HORIZON, 32)
    assert n == n2
    worst = max(
        float(np.max(np.abs(getattr(ours[k], f) - getattr(ref[k], f)) / (np.abs(getattr(ref[k], f)) + 1e-12)))
        for k in ours
        for f in ("mean", "std", "q01", "q99")
    )
    return report(
        f"P3 norm stats, {n} frames of {ENV_ID}, action_horizon {HORIZON}",
        [
            ("openpi loader, frame by frame: s", t_loader["s"], "s"),
            ("ours (columns only, same transforms): s", t_ours["s"], "s"),
            ("max relative difference of the stats", worst, ""),
        ],
        t_loader["s"] / t_ours["s"],
        10.0,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
