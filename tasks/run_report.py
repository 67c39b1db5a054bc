"""run_report: the report of one pipeline run, at `<root>/<env_id>/runs/<run_id>/report.html`.

verify's `report.html` (frames, loss curve, predicted vs demonstrated actions, closed-loop episodes,
lineage) belongs to a content-addressed artifact that every run reusing it shares; this stage copies it
and adds what only this run knows: each stage's duration, whether it was a cache hit, and the artifact
it used, and, when verify evaluated several checkpoints of the training run, the selection among them
(tasks/select_checkpoint.py: success and validation loss against step). `run.json` next to it holds the
same table as data. Rerunning the stage rewrites both files
(each in one atomic write), so a retried task leaves a whole report.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tasks.core import cli, report
from tasks.core.specs import get_spec
from tasks.core.stage import StageResult
from tasks.core.store import ArtifactStore, check_segment, work_dir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunReportParams:
    env_id: str  # registered ManiSkill env id (tasks/core/specs.py), e.g. PickCube-v1
    run_id: str  # the pipeline run (an Airflow run id); its report goes to <root>/<env_id>/runs/<run_id>/

    def validate(self) -> None:
        get_spec(self.env_id)
        if not self.run_id:
            raise ValueError("run_id is empty: name the pipeline run this report is for")


def run_segment(run_id: str) -> str:
    """Airflow run ids (`manual__2026-11-25T05:00:00+00:00`) as one safe path segment."""
    segment = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:128]
    return check_segment(segment or "run", "run id")


def stage_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`{"download": result, "render": [result, ...], ...}` (stage results as XCom carries them) -> table rows."""
    rows = []
    for name, value in results.items():
        items = value if isinstance(value, list) else [value]
        for i, r in enumerate(items):
            if not r:
                continue
            label = f"{name}[{i}]" if isinstance(value, list) else name
            if isinstance(value, list) and r.get("split"):
                label += f" ({r['split']}, episodes {r.get('metrics', {}).get('shard')})"
            elif isinstance(value, list) and (r.get("metrics") or {}).get("checkpoint_step"):
                label += f" (step {r['metrics']['checkpoint_step']})"
            rows.append(
                {
                    "stage": label,
                    "seconds": round(float(r.get("seconds") or 0), 2),
                    "cache_hit": bool(r.get("cache_hit")),
                    "uri": r.get("uri", ""),
                }
            )
    return rows


def promotion_line(promotion: dict[str, Any] | None) -> str:
    """The promotion outcome, in words, for beside the verdict (a verdict `passed` is not yet a promoted policy)."""
    if not promotion:
        return "Promotion: not run"
    if promotion.get("promoted"):
        return f"Promotion: promoted to latest ({promotion.get('reason') or 'the rule said so'})"
    return f"Promotion: not promoted ({promotion.get('reason') or 'no reason given'})"


def run_report(
    params: RunReportParams,
    root: str,
    verification: str,
    stages: list[dict[str, Any]],
    selection: str | None = None,
    promotion: dict[str, Any] | None = None,
) -> StageResult:
    """`promotion`: the promote stage's metrics (`promoted`, `reason`), stated beside the verdict."""
    params.validate()
    t0 = time.monotonic()
    store = ArtifactStore(root)
    scratch = work_dir()
    chosen = None
    try:
        _, verify_dir = store.fetch(verification, scratch)
        page = (verify_dir / "report.html").read_text()
        if selection:
            _, selection_dir = store.fetch(selection, scratch)
            chosen = json.loads((selection_dir / "selection.json").read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    section = report.stages_section(stages)
    if chosen is not None:
        section = report.selection_section(chosen) + section
    if report.STAGES_MARKER in page:
        page = page.replace(report.STAGES_MARKER, section)
    else:  # a report from before the marker existed
        page = page.replace("<h2>Camera frames</h2>", section + "<h2>Camera frames</h2>", 1)
    page = page.replace(" run report</title>", f" run report ({params.run_id})</title>", 1)
    outcome = f"<p id='promotion'>{html.escape(promotion_line(promotion))}</p>"
    page, placed = re.subn(r"(<p id='verdict-reason'>.*?</p>)", lambda m: m.group(1) + outcome, page, count=1)
    if not placed:
        page = page.replace("<h2>Metrics</h2>", outcome + "<h2>Metrics</h2>", 1)
    run_uri = f"{store.root}/{check_segment(params.env_id, 'env id')}/runs/{run_segment(params.run_id)}"
    summary = {
        "run_id": params.run_id,
        "env_id": params.env_id,
        "verify": verification,
        "selection": selection,
        "promotion": {k: (promotion or {}).get(k) for k in ("promoted", "reason")},
        "selected_step": next((c["step"] for c in (chosen or {}).get("candidates", []) if c.get("selected")), None),
        "stages": stages,
        "cache_hits": sum(s["cache_hit"] for s in stages),
        "stage_seconds": round(sum(s["seconds"] for s in stages), 2),
        "finished_at": time.time(),
    }  # retention keeps the newest runs' artifacts (tasks/maintenance.py)
    store.write_json(f"{run_uri}/run.json", summary)
    store.write_bytes(f"{run_uri}/report.html", page.encode())
    log.info(f"[run_report] {run_uri}/report.html ({len(stages)} stages, {summary['cache_hits']} cache hits)")
    return StageResult(
        uri=run_uri,
        digest="",
        cache_hit=False,
        seconds=time.monotonic() - t0,
        files_uri=run_uri,
        metrics={
            "report": f"{run_uri}/report.html",
            "stages": len(stages),
            "cache_hits": summary["cache_hits"],
            "stage_seconds": summary["stage_seconds"],
        },
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    cli.configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.run_report", description=cli.first_paragraph(__doc__))
    parser.add_argument(
        "--root",
        default=cli.default_root(),
        help="artifact root URI (file:///dir or s3://bucket/prefix; default %(default)s)",
    )
    parser.add_argument("--env-id", required=True, help="registered ManiSkill env id, e.g. PickCube-v1")
    parser.add_argument("--run-id", required=True, help="the pipeline run the report is for (e.g. an Airflow run id)")
    parser.add_argument("--verification", required=True, help="verify artifact URI (the run's verification)")
    parser.add_argument(
        "--stages",
        type=Path,
        required=True,
        help="JSON file: the run's stages as a list of {stage, seconds, cache_hit, uri}",
    )
    parser.add_argument(
        "--selection", default=None, help="select artifact URI (the checkpoint selection), if any (default: none)"
    )
    args = parser.parse_args(argv)
    result = run_report(
        RunReportParams(args.env_id, args.run_id),
        root=args.root,
        verification=args.verification,
        stages=json.loads(args.stages.read_text()),
        selection=args.selection,
    )
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
