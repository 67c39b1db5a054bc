"""Peak RSS of convert and stats at 10 vs 40 episodes: streaming stages must not grow with episode count."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py

from bench.common import ENV_ID, OUT, local, peak_rss_mb, rendered
from tasks.core.demo_files import sidecar


def replicate(src: Path, dst: Path, episodes: int) -> None:
    """A rendered file with `episodes` episodes, cycling through the real ones (memory depends on count, not content)."""
    meta = json.loads(sidecar(src).read_text())
    base = meta["episodes"]
    out = []
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
        for i in range(episodes):
            ep = base[i % len(base)]
            s.copy(f"traj_{ep['episode_id']}", d, f"traj_{i}")
            out.append({**ep, "episode_id": i})
    meta["episodes"] = out
    sidecar(dst).write_text(json.dumps(meta))


def child(stage: str, path: str) -> None:
    from tasks.convert import ConvertParams, write_dataset
    from tasks.core.specs import get_spec
    from tasks.stats import compute_norm_stats

    spec = get_spec(ENV_ID)
    import openpi.training.data_loader  # noqa: F401  same imports in both stages, so the baselines compare

    if stage == "convert":
        write_dataset(spec, [Path(path)], Path(path).parent / "ds", "bench/mem", ConvertParams(env_id=ENV_ID))
    else:
        compute_norm_stats(spec, Path(path).parent / "ds", 10, 32)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def main(small: int = 10, large: int = 40, source: int = 10) -> dict:
    src = local(rendered(source)) / "trajectory.h5"
    rows = {}
    for n in (small, large):
        work = OUT / f"mem{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        replicate(src, work / "trajectory.h5", n)
        for stage in ("convert", "stats"):
            out = (
                subprocess.run(
                    [sys.executable, "-m", "bench.bench_memory", "--child", stage, str(work / "trajectory.h5")],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            rows[(stage, n)] = json.loads(out)["peak_rss_mb"]
    print(f"\nPeak RSS (MB), {small} vs {large} episodes")
    result = {}
    for stage in ("convert", "stats"):
        growth = rows[(stage, large)] / rows[(stage, small)]
        print(
            f"  {stage:<8} {small} eps: {rows[(stage, small)]:8.0f}   {large} eps: {rows[(stage, large)]:8.0f}   "
            f"{large}/{small}: {growth:.3f}"
        )
        result[stage] = {str(small): rows[(stage, small)], str(large): rows[(stage, large)], "ratio": growth}
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps({"name": "memory", **result}) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main(*[int(a) for a in sys.argv[1:]])
