"""Task specs from the command line: derive a TaskSpec for a new ManiSkill task, check the registered ones.

- `derive ENV_ID`: probes the env (tasks/sim/probe.py), generates a few demos with ManiSkill's motion planner and
  renders them through the pipeline's own download and render stages, then measures the rendered episodes
  (lengths, constant dimensions) and prints a TaskSpec to paste into tasks/core/specs.py, each choice explained
  in a comment.
- `check [ENV_ID ...]`: every registered TaskSpec (or the named ones) against its env; exits 1 on a problem.

`coverage_row` runs one registered task through download, render, convert and stats (docs/tasks.md, and the
per-task test tier).

    python -m tasks.flows.task_specs derive LiftPegUpright-v1
    python -m tasks.flows.task_specs check
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from tasks.core.specs import TASK_SPECS, SpecError, TaskSpec
from tasks.sim.probe import SKIPPED_STATE, camera_slots, check_registered, probe_env, varying_slices


@dataclasses.dataclass
class Derived:
    spec: TaskSpec
    facts: dict
    notes: list[str]

    def code(self) -> str:
        s = self.spec
        lines = [
            f"TaskSpec(  # derived by `python -m tasks.flows.task_specs derive {s.env_id}`",
            f"    env_id={s.env_id!r},",
            f"    prompt={s.prompt!r},",
            f"    cameras={s.cameras!r},",
            f"    state_keys={s.state_keys!r},",
            f"    state_widths={s.state_widths!r},",
            f"    action_dim={s.action_dim},",
            f"    control_mode={s.control_mode!r},",
            f"    fps={s.fps},",
            "),",
        ]
        notes = ["# " + line for note in self.notes for line in textwrap.wrap(note, 110)]
        return "\n".join(notes + lines)


def describe(env_id: str) -> str:
    """The env class's own task description (ManiSkill docstrings carry a '**Task Description:**' section)."""
    from mani_skill.utils.registration import REGISTERED_ENVS

    entry = REGISTERED_ENVS.get(env_id)
    doc = " ".join(((entry.cls.__doc__ if entry else "") or "").split())
    if "Task Description:**" in doc:
        doc = doc.split("Task Description:**", 1)[1].split("**", 1)[0]
    return doc.strip()[:300] or "(none in its docstring)"


def derive(
    env_id: str,
    demos: int = 3,
    seed: int = 0,
    control_mode: str = "pd_ee_delta_pose",
    root: str | None = None,
    min_std: float = 1e-5,
) -> Derived:
    """Proposes a TaskSpec for `env_id` from the env and from demos rendered by the pipeline's own stages."""
    import h5py

    from tasks.core.store import ArtifactStore
    from tasks.download import DownloadParams, download
    from tasks.render import RenderParams, render

    layout = probe_env(env_id, control_mode)
    cameras, unplaced = camera_slots(sorted(layout.sensors))
    if not cameras:
        raise SpecError(f"{env_id} has no RGB sensor: a vision-language-action policy cannot see it")
    candidates = [k for k in sorted(layout.obs_widths) if k not in SKIPPED_STATE]
    provisional = TaskSpec(
        env_id=env_id,
        prompt="(derive)",
        cameras=tuple(cameras),
        state_keys=tuple(candidates),
        state_widths=tuple(layout.obs_widths[k] for k in candidates),
        action_dim=layout.action_dim,
        control_mode=control_mode,
        fps=layout.control_freq,
    )
    registered = TASK_SPECS.get(env_id)
    if registered is None:
        TASK_SPECS[env_id] = provisional  # the stages look specs up by env id; removed again below
    try:
        with tempfile.TemporaryDirectory(prefix="derive-") as tmp:
            root = root or Path(tmp).as_uri()
            demo_set = download(DownloadParams(env_id=env_id, count=demos, seed=seed), root=root)
            rendered = render(RenderParams(env_id=env_id, min_success_ratio=0.0), root=root, demos=demo_set.uri)
            _, files = ArtifactStore(root).fetch(rendered.uri, Path(tmp) / "cache")
            lengths, arrays = [], {k: [] for k in candidates}
            with h5py.File(files / "trajectory.h5", "r") as h5:
                for name in sorted(h5.keys()):
                    group = h5[name]
                    lengths.append(int(group["actions"].shape[0]))
                    for k in candidates:
                        g, n = k.split("/")
                        arrays[k].append(group["obs"][g][n][:-1])  # the frames convert keeps (one per action)
    finally:
        if registered is None:
            TASK_SPECS.pop(env_id, None)

    state_keys, widths, notes = [], [], []
    for k in candidates:
        full = layout.obs_widths[k]
        runs = varying_slices(np.concatenate(arrays[k]), min_std)
        if not runs:
            notes.append(f"{k} left out: constant over every frame of the demos.")
            continue
        for a, b in runs:
            state_keys.append(k if (a, b) == (0, full) else f"{k}[{a}:{b}]")
            widths.append(full)
        if runs != [(0, full)]:
            kept = ", ".join(f"[{a}:{b}]" for a, b in runs)
            notes.append(
                f"{k} sliced to {kept}: the other values are constant in the demos (std < {min_std}; the stats "
                "stage refuses constant state, which normalisation would blow up)."
            )
    planner = demo_set.metrics.get("planner_success_rate")
    facts = {
        "robot": layout.robot,
        "sensors": {k: list(v) for k, v in layout.sensors.items()},
        "obs_widths": layout.obs_widths,
        "control_freq": layout.control_freq,
        "action_dim": layout.action_dim,
        "demos": demos,
        "planner_success_rate": planner,
        "replay_success_ratio": rendered.metrics.get("success_ratio"),
        "episode_lengths": lengths,
        "longest_episode": max(lengths) if lengths else 0,
        "unplaced_cameras": unplaced,
    }
    notes = [
        f"{env_id}: robot {layout.robot}, {layout.control_freq} Hz (fps), {layout.action_dim} action values in "
        f"{control_mode}; RGB sensors {dict(layout.sensors)}.",
        "Cameras: "
        + ", ".join(f"{s} -> {slot}" for s, slot in cameras)
        + (f"; no pi0 slot left for {unplaced}" if unplaced else "")
        + ".",
        f"State: the RGB-mode observation's {', '.join(candidates)} (object poses exist in state mode only; "
        "agent/qvel and scalars are left out).",
        *notes,
        f"{demos} planner demos (planner success {planner}), replay success {rendered.metrics.get('success_ratio')}; "
        f"converted lengths {lengths}: verify's step limit is derived from the longest (x1.15).",
        f"Prompt: write the instruction. ManiSkill describes the task as: {describe(env_id)}",
    ]
    # A TaskSpec refuses an empty prompt: the proposal carries a marker the user replaces.
    proposal = TaskSpec(
        env_id=env_id,
        prompt="<the instruction, e.g. from ManiSkill's description above>",
        cameras=tuple(cameras),
        state_keys=tuple(state_keys),
        state_widths=tuple(widths),
        action_dim=layout.action_dim,
        control_mode=control_mode,
        fps=layout.control_freq,
    )
    return Derived(proposal, facts, notes)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tasks.core.cli import configure_logging, first_paragraph

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.flows.task_specs", description=first_paragraph(__doc__))
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{derive,check}",
        help="derive: propose a TaskSpec for a new env; check: check the registered ones",
    )
    text = "propose a TaskSpec for a ManiSkill env id from the env and a few rendered demos"
    d = sub.add_parser("derive", help=text, description=text[0].upper() + text[1:] + ".")
    d.add_argument("env_id", help="a ManiSkill env id with a motion-planning solution, e.g. LiftPegUpright-v1")
    d.add_argument(
        "--demos", type=int, default=3, help="planner demos to generate and render, 1..100 (default %(default)s)"
    )
    d.add_argument("--seed", type=int, default=0, help="first planner seed (default %(default)s)")
    d.add_argument(
        "--control-mode", default="pd_ee_delta_pose", help="control mode to replay into (default %(default)s)"
    )
    d.add_argument("--json", action="store_true", help="print the measured facts as JSON after the spec (default: off)")
    text = "check registered TaskSpecs against their envs; exits 1 on a problem"
    c = sub.add_parser("check", help=text, description=text[0].upper() + text[1:] + ".")
    c.add_argument("env_ids", nargs="*", help="registered env ids to check (default: every registered task)")
    args = parser.parse_args(argv)
    if args.command == "derive":
        if not 1 <= args.demos <= 100:
            parser.error(f"--demos must be 1..100, got {args.demos}")
        derived = derive(args.env_id, demos=args.demos, seed=args.seed, control_mode=args.control_mode)
        print(derived.code())
        if args.json:
            print(json.dumps(derived.facts))
        return 0
    unknown = [e for e in args.env_ids if e not in TASK_SPECS]
    if unknown:
        parser.error(f"not registered: {unknown}; registered: {sorted(TASK_SPECS)}")
    bad = {k: v for k, v in check_registered(args.env_ids).items() if v}
    for env_id, problems in bad.items():
        print(f"{env_id}:\n  " + "\n  ".join(problems))
    print(f"{len(args.env_ids) or len(TASK_SPECS)} specs checked, {len(bad)} with problems")
    return 1 if bad else 0


def coverage_row(env_id: str, root: str, demos: int = 2, seed: int = 0, camera_size: int = 0) -> dict:
    """download -> render -> convert -> stats for one registered task through the pipeline's own stages; the
    row of docs/tasks.md (and what the per-task test tier asserts on)."""
    import time

    from tasks.convert import ConvertParams, convert
    from tasks.download import DownloadParams, download
    from tasks.render import RenderParams, render
    from tasks.stats import StatsParams, stats

    spec = TASK_SPECS[env_id]
    t0 = time.monotonic()
    demo_set = download(DownloadParams(env_id=env_id, count=demos, seed=seed), root=root)
    # min_success_ratio 0: the ratio is reported (and judged by the caller), and derive's render of the same demos
    # is then the same artifact
    rendered = render(
        RenderParams(env_id=env_id, min_success_ratio=0.0, camera_size=camera_size), root=root, demos=demo_set.uri
    )
    dataset = convert(ConvertParams(env_id=env_id), root=root, rendered=[rendered.uri])
    norm = stats(StatsParams(env_id=env_id), root=root, dataset=dataset.uri)
    return {
        "env_id": env_id,
        "demos": demos,
        "planner_success_rate": demo_set.metrics.get("planner_success_rate"),
        "replay_success_ratio": rendered.metrics["success_ratio"],
        "episodes": dataset.metrics["episodes"],
        "frames": dataset.metrics["frames"],
        "state_dim": spec.state_dim,
        "action_dim": spec.action_dim,
        "cameras": [f"{sensor}->{slot}" for sensor, slot in spec.cameras],
        "image_shape_chw": dataset.metrics.get("image_shape_chw"),
        "longest_episode": dataset.metrics.get("longest_episode"),
        "min_state_std": norm.metrics.get("min_std", {}).get("state"),
        "seconds": round(time.monotonic() - t0, 1),
        "uris": {"download": demo_set.uri, "render": rendered.uri, "convert": dataset.uri, "stats": norm.uri},
    }


if __name__ == "__main__":
    raise SystemExit(main())
