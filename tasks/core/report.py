"""The run report: one self-contained HTML file (figures inlined as PNG), readable offline and from S3.

Sections: verdict and metrics table, per-stage durations and cache hits (the run report adds them: verify's
own report is content-addressed and shared by every run that reuses it, so it cannot hold one run's timings),
sample camera frames (held-out data and the closed-loop rollout), the training loss curve, predicted vs
demonstrated actions per dimension, closed-loop episodes, and lineage (demos -> dataset -> checkpoint).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.specs import TaskSpec


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img_tag(b64: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"{w}>'


def _frame_png(image: np.ndarray) -> str:
    import PIL.Image

    buf = io.BytesIO()
    PIL.Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def loss_figure(losses: list[dict]) -> str | None:
    """Training loss per step and, where training computed it, the held-out validation loss beside it."""
    train = [r for r in losses if "loss" in r]
    val = [r for r in losses if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], marker="o", markersize=3, label="training loss")
    if val:
        ax.plot(
            [r["step"] for r in val],
            [r["val_loss"] for r in val],
            marker="s",
            markersize=4,
            color="tab:red",
            label="held-out validation loss",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def actions_figure(predicted: np.ndarray | None, demonstrated: np.ndarray) -> str | None:
    """One panel per action dimension: the held-out frames' chunks laid end to end, predicted vs demonstrated."""
    if predicted is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, h, dims = predicted.shape
    fig, axes = plt.subplots(dims, 1, figsize=(7, 1.4 * dims), sharex=True, squeeze=False)
    x = np.arange(n * h)
    for d in range(dims):
        ax = axes[d, 0]
        ax.plot(x, demonstrated[..., d].reshape(-1), label="demonstrated", color="black", linewidth=1)
        ax.plot(x, predicted[..., d].reshape(-1), label="predicted", color="tab:orange", linewidth=1)
        for b in range(1, n):
            ax.axvline(b * h - 0.5, color="grey", alpha=0.2)
        ax.set_ylabel(f"a[{d}]")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("held-out frame x chunk step")
    return _png(fig)


def selection_figure(rows: list[dict]) -> str | None:
    """Closed-loop success (with its 95 % interval) and held-out validation loss against the checkpoint's step."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3))
    rates = [r["success_rate"] if r["success_rate"] is not None else np.nan for r in rows]
    lo = [r["success_rate"] - r["ci95"][0] if r.get("ci95") else 0.0 for r in rows]
    hi = [r["ci95"][1] - r["success_rate"] if r.get("ci95") else 0.0 for r in rows]
    ax.errorbar(
        steps, rates, yerr=[lo, hi], marker="o", capsize=3, color="tab:green", label="closed-loop success (95 % CI)"
    )
    chosen = [r for r in rows if r.get("selected")]
    if chosen:
        ax.plot(
            [chosen[0]["step"]],
            [chosen[0]["success_rate"] or 0.0],
            marker="*",
            markersize=14,
            color="gold",
            markeredgecolor="black",
            linestyle="none",
            label="selected",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    losses = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    handles, labels = ax.get_legend_handles_labels()
    if losses:
        ax2 = ax.twinx()
        (line,) = ax2.plot(
            [s for s, _ in losses],
            [v for _, v in losses],
            marker="s",
            color="tab:red",
            label="held-out validation loss",
        )
        ax2.set_ylabel("validation loss")
        handles.append(line)
        labels.append(line.get_label())
    ax.legend(handles, labels, fontsize=8, loc="best")
    return _png(fig)


def selection_section(selection: dict[str, Any]) -> str:
    """The checkpoints verify evaluated, which one was selected and why (the run report inserts it)."""
    rows = selection.get("candidates") or []
    body = "".join(
        f"<tr{' class=pass' if r.get('selected') else ''}><td class='num'>{r['step']}</td>"
        f"<td class='num'>{r.get('successes')}/{r.get('episodes')}</td><td class='num'>{_pct(r.get('success_rate'))}</td>"
        f"<td class='num'>{_fmt(r.get('val_loss'))}</td><td>{html.escape(str(r.get('verdict')))}</td>"
        f"<td>{'selected' if r.get('selected') else ''}</td><td><code>{html.escape(r.get('verify') or '')}</code></td></tr>"
        for r in rows
    )
    figure = selection_figure(rows)
    return (
        "<h2>Checkpoint selection</h2>"
        f"<p>{html.escape(selection.get('reason') or '')}</p>"
        + (_img_tag(figure, "closed-loop success and validation loss against step") if figure else "")
        + "<table id='selection'><tr><th>step</th><th>successes</th><th>success rate</th><th>validation loss</th>"
        f"<th>verdict</th><th></th><th>verification</th></tr>{body}</table>"
    )


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}
th{background:#f4f4f4}.pass{color:#080}.fail{color:#b00}.unchecked{color:#a60}figure{display:inline-block;margin:4px}
figcaption{font-size:11px;color:#555}code{font-size:12px}.num{text-align:right}.hit{color:#666}"""


STAGES_MARKER = "<!-- stages: filled in by the run report (tasks/run_report.py) -->"


def stages_section(stages: list[dict]) -> str:
    """Per-stage durations, cache hits and artifacts of one pipeline run."""
    total = sum(float(s.get("seconds") or 0) for s in stages)
    rows = "".join(
        f"<tr><td>{html.escape(s['stage'])}</td><td class='num'>{float(s.get('seconds') or 0):.1f}</td>"
        f"<td class='{'hit' if s.get('cache_hit') else 'ran'}'>{'cache hit' if s.get('cache_hit') else 'ran'}</td>"
        f"<td><code>{html.escape(s.get('uri') or '')}</code></td></tr>"
        for s in stages
    )
    hits = sum(bool(s.get("cache_hit")) for s in stages)
    return (
        "<h2>Stages of this run</h2>"
        f"<p>{len(stages)} stages, {hits} cache hits, {total:.1f} s of stage time.</p>"
        f"<table id='stages'><tr><th>stage</th><th>seconds</th><th>cache</th><th>artifact</th></tr>{rows}</table>"
    )


def _pct(rate: Any) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f} %"


def write_report(
    path: Path,
    *,
    spec: TaskSpec,
    metrics: dict[str, Any],
    losses: list[dict],
    predicted: np.ndarray | None,
    demonstrated: np.ndarray,
    samples: list[dict],
    rollout_frames: list[dict],
    episodes: list[dict],
    harness_episodes: list[dict] | None = None,
) -> Path:
    verdict = metrics.get("verdict") or "unchecked"
    css = {"passed": "pass", "failed": "fail"}.get(verdict, "unchecked")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.env_id)} run report</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(spec.env_id)}: pi0 verification <span id='verdict' class='{css}'>{verdict.upper()}</span></h1>",
        f"<p id='verdict-reason'>{html.escape(metrics.get('verdict_reason') or '')}</p>",
        f"<p>Prompt: <i>{html.escape(spec.prompt)}</i></p>",
    ]
    ci = metrics.get("success_rate_ci95")
    harness = metrics.get("harness") or {}
    headline = [
        (
            "closed-loop success rate (success_once)",
            f"{metrics.get('successes')}/{metrics.get('episodes')} = {_pct(metrics.get('success_rate'))}"
            + (f", 95 % Wilson CI {_pct(ci[0])} - {_pct(ci[1])}" if ci else ""),
        ),
        ("success_at_end rate", _pct(metrics.get("success_at_end_rate"))),
        ("median steps to first success", metrics.get("median_steps_to_success")),
        (
            "harness check (oracle replays held-out demos)",
            f"{'ok' if harness.get('ok') else 'FAILED'}: {_pct(harness.get('success_at_end_rate'))} of "
            f"{harness.get('episodes')} demos replayed, bar {_pct(harness.get('bar'))}"
            if harness
            else "not run",
        ),
        ("held-out action MAE", metrics.get("action_mae")),
        ("output shape", metrics.get("output_shape")),
        ("finite", metrics.get("finite")),
        ("inference latency (ms, median)", metrics.get("latency_ms_median")),
        ("checks", metrics.get("checks")),
        ("thresholds", metrics.get("thresholds")),
        ("training", metrics.get("train")),
    ]
    parts += ["<h2>Metrics</h2>", f"<div id='metrics'>{_table(headline)}</div>"]
    parts += [STAGES_MARKER]
    frames = [(_frame_png(s["image"]), f"held-out frame {s['frame']}") for s in samples]
    frames += [(_frame_png(f["image"]), f"rollout step {f['step']}") for f in rollout_frames]
    if frames:
        parts += ["<h2>Camera frames</h2><div id='frames'>"]
        parts += [f"<figure>{_img_tag(b, c, 160)}<figcaption>{html.escape(c)}</figcaption></figure>" for b, c in frames]
        parts += ["</div>"]
    loss = loss_figure(losses)
    parts += [
        "<h2>Training and validation loss</h2>",
        f"<div id='loss'>{_img_tag(loss, 'training and validation loss curves')}</div>"
        if loss
        else "<p>no training log</p>",
    ]
    acts = actions_figure(predicted, demonstrated)
    parts += [
        "<h2>Predicted vs demonstrated actions (held-out frames)</h2>",
        f"<div id='actions'>{_img_tag(acts, 'predicted vs demonstrated actions')}</div>"
        if acts
        else "<p>predictions unusable (see checks)</p>",
    ]
    if episodes:
        rows = "".join(
            f"<tr><td>{e['seed']}</td><td>{'yes' if e['success_once'] else 'no'}</td>"
            f"<td>{'yes' if e['success_at_end'] else 'no'}</td><td>{e['steps_to_success'] or ''}</td>"
            f"<td>{e['steps']}</td><td>{e['seconds']}</td></tr>"
            for e in episodes
        )
        parts += [
            "<h2>Closed-loop episodes</h2>",
            "<table id='episodes'><tr><th>seed</th><th>success_once</th><th>success_at_end</th>"
            f"<th>first success at step</th><th>steps</th><th>seconds</th></tr>{rows}</table>",
        ]
    if harness_episodes:
        rows = "".join(
            f"<tr><td>{e['seed']}</td><td>{'yes' if e['success_at_end'] else 'no'}</td><td>{e['steps']}</td></tr>"
            for e in harness_episodes
        )
        parts += [
            "<h2>Harness check: held-out demos replayed by the oracle</h2>",
            f"<table id='harness'><tr><th>demo seed</th><th>success_at_end</th><th>steps</th></tr>{rows}</table>",
        ]
    protocol = metrics.get("protocol")
    if protocol:
        parts += ["<h2>Evaluation protocol</h2>", f"<div id='protocol'>{_table(list(protocol.items()))}</div>"]
    lineage = metrics.get("lineage", {})
    parts += ["<h2>Lineage</h2>", f"<div id='lineage'>{_table(list(lineage.items()))}</div>", "</body></html>"]
    path.write_text("\n".join(parts))
    return path
