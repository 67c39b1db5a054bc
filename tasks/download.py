"""download: get a demo set for one env id into the artifact store.

Sources:
- `motionplanning`: ManiSkill's own motion-planning solutions generate demos offline (env id, count, seed).
- `hub`: ManiSkill's `download_demo` (Hugging Face), the usual path for users; fails fast when offline.
- `s3`: copy a mirrored demo set (`trajectory.h5` + `trajectory.json`) from any fsspec URI.

Output artifact: `trajectory.h5` + `trajectory.json` (state-only, `pd_joint_pos`), exactly `count` episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import socket
from pathlib import Path

import fsspec

from tasks.core import cli
from tasks.core.checks import HUB_HOST, unreachable
from tasks.core.demo_files import DemoFileError, load_episodes, write_subset
from tasks.core.errors import NotRetryable
from tasks.core.params import DownloadParams
from tasks.core.stage import StageResult, run_stage
from tasks.core.store import ArtifactStore

STAGE = "download"
CODE_VERSION = "1"


class DownloadError(NotRetryable):
    """The demo source cannot deliver what was asked for."""


def _motionplanning(params: DownloadParams, out: Path) -> Path:
    from mani_skill.examples.motionplanning.panda import run as mp_run

    if params.env_id not in mp_run.MP_SOLUTIONS:
        raise DownloadError(
            f"ManiSkill has no motion-planning solution for {params.env_id}; available: {sorted(mp_run.MP_SOLUTIONS)}. "
            "Use source=hub or source=s3 for this task."
        )
    record_dir = out.parent / "mp"
    args = argparse.Namespace(
        env_id=params.env_id,
        obs_mode="none",
        num_traj=params.count,
        only_count_success=True,
        reward_mode=None,
        sim_backend="cpu",
        render_mode="rgb_array",
        vis=False,
        save_video=False,
        traj_name="trajectory",
        shader="default",
        record_dir=str(record_dir),
        num_procs=1,
    )
    # ManiSkill's own generator; its public main() always starts at seed 0, _main takes the start seed. It tries
    # seeds until `count` succeed and never gives up, so a solution that cannot succeed (DrawTriangle's in 3.0.1
    # raises on every seed) would loop forever: the guard stops it and says why.
    guard = _PlannerGuard(mp_run.MP_SOLUTIONS[params.env_id])
    mp_run.MP_SOLUTIONS[params.env_id] = guard
    try:
        h5 = mp_run._main(args, proc_id=0, start_seed=params.seed)
    except _PlannerGaveUp:
        last = f" (last error: {type(guard.last_error).__name__}: {guard.last_error})" if guard.last_error else ""
        raise DownloadError(
            f"ManiSkill's motion-planning solution for {params.env_id} failed on {guard.streak} seeds in a row from seed "
            f"{guard.last_seed - guard.streak + 1}{last}; it cannot make demos here. Use source=hub or source=s3 for "
            "this task, or check the ManiSkill version"
        ) from None
    finally:
        mp_run.MP_SOLUTIONS[params.env_id] = guard.solve
    return Path(h5)


class _PlannerGaveUp(BaseException):
    """Not an Exception: ManiSkill's loop catches those and goes on with the next seed."""


class _PlannerGuard:
    """Wraps a motion-planning solution and stops the generator after too many failures in a row."""

    MAX_FAILURES = 100  # in a row; PlaceSphere, the hardest registered task, succeeds on ~40 % of seeds
    MAX_ERRORS = 10  # exceptions in a row: a broken solution, not bad luck

    def __init__(self, solve):
        self.solve = solve
        self.streak = self.errors = 0
        self.last_error: Exception | None = None
        self.last_seed = 0

    def __call__(self, env, seed=None, **kwargs):
        self.last_seed = seed or 0
        try:
            result = self.solve(env, seed=seed, **kwargs)
        except Exception as e:
            self.streak, self.errors, self.last_error = self.streak + 1, self.errors + 1, e
            if self.errors >= self.MAX_ERRORS or self.streak >= self.MAX_FAILURES:
                raise _PlannerGaveUp() from e
            raise
        self.errors = 0
        succeeded = not isinstance(result, int) and bool(result[-1]["success"].item())
        self.streak = 0 if succeeded else self.streak + 1
        if self.streak >= self.MAX_FAILURES:
            raise _PlannerGaveUp()
        return result


def _hub(params: DownloadParams, out: Path) -> Path:
    from mani_skill.utils import download_demo

    if params.env_id not in download_demo.DATASET_SOURCES:
        raise DownloadError(
            f"ManiSkill's demo hub has no demos for {params.env_id}; use source=motionplanning or source=s3"
        )
    if (e := unreachable(HUB_HOST, timeout_s=5)) is not None:
        raise DownloadError(
            f"cannot reach {HUB_HOST} (ManiSkill's demo hub): {e}. This machine is offline or the hub is blocked. "
            "Generate demos offline with source=motionplanning, or mirror them and use source=s3 with source_uri."
        ) from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # urlretrieve has no timeout of its own: never hang on a stalled transfer
    try:
        download_demo.main(argparse.Namespace(uid=params.env_id, quiet=True, output_dir=str(out.parent / "hub")))
    finally:
        socket.setdefaulttimeout(old)
    candidates = sorted((out.parent / "hub").rglob("motionplanning/trajectory.h5")) or sorted(
        (out.parent / "hub").rglob("trajectory.h5")
    )
    if not candidates:
        raise DownloadError(f"the hub archive for {params.env_id} holds no trajectory.h5")
    return candidates[0]


def _mirror(params: DownloadParams, out: Path) -> Path:
    dest = out.parent / "mirror"
    dest.mkdir()
    base = params.source_uri.rstrip("/")
    for name in ("trajectory.h5", "trajectory.json"):
        try:
            with fsspec.open(f"{base}/{name}", "rb") as src, open(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        except FileNotFoundError:
            raise DownloadError(
                f"{base}/{name} not found: source_uri must be a folder with trajectory.h5 and trajectory.json"
            ) from None
    return dest / "trajectory.h5"


def download(params: DownloadParams, root: str) -> StageResult:
    params.validate()
    store = ArtifactStore(root)

    def build(out: Path) -> dict:
        fetch = {"motionplanning": _motionplanning, "hub": _hub, "s3": _mirror}[params.source]
        h5 = fetch(params, out)
        episodes = load_episodes(h5)
        env_id = json.loads(h5.with_suffix(".json").read_text())["env_info"]["env_id"]
        if env_id != params.env_id:
            raise DemoFileError(f"{h5}: demos are for {env_id}, not {params.env_id}")
        if len(episodes) < params.count:
            raise DownloadError(
                f"{params.source} delivered {len(episodes)} episodes of {params.env_id}, fewer than count={params.count}"
            )
        chosen = episodes[: params.count]
        write_subset(h5, chosen, out / "trajectory.h5")
        metrics = {
            "episodes": len(chosen),
            "steps": int(sum(e.get("elapsed_steps", 0) for e in chosen)),
            "source": params.source,
        }
        seeds = [e.get("episode_seed") for e in episodes]
        if params.source == "motionplanning" and all(isinstance(s, int) for s in seeds) and seeds:
            # The planner keeps trying seeds until `count` succeed and records only the successes.
            metrics["planner_success_rate"] = round(len(episodes) / (max(seeds) - params.seed + 1), 4)
        return metrics

    return run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params=dataclasses.asdict(params),
        parents=[],
        build=build,
    )


main = cli.cli(__doc__, DownloadParams, download)

if __name__ == "__main__":
    raise SystemExit(main())
