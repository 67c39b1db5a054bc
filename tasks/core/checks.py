"""The checks several stages make before any work, each in one place so that they cannot drift apart.

- The model's width: openpi pads state and actions to pi0's 32-wide action vector, so a task whose state or action
  is wider cannot be fed to the model at all (`check_fits_model`; the train config, the stats and train stages).
- The norm-stats widths: `norm_stats.json` must have the widths of the spec's state and actions (the manual
  workflow's 18-vs-7 bug) and fit the model (`check_norm_stats_widths`; the stats stage writes them, train reads them).
- The vision tower: a checkpoint loads only into a model with the SigLIP tower it was trained with
  (`check_vision_tower`; train's warm start, verify and serve).
- The offline probe: a host that cannot be reached (Hugging Face, Google Cloud Storage) is found out in seconds
  (`unreachable`), not after a download hangs (download's hub source, train's gs:// weights, the tokenizer).

Pure and light (the standard library and the task specs): the DAG side and the CLIs can run them without openpi.
Each check takes the caller's error class, so that a stage still raises its own error (and the Airflow side still
reads it as retryable or not). Where the device is chosen (auto, cpu, gpu) is ManiSkill's side: tasks/sim/devices.py.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from tasks.core.specs import TaskSpec

# pi0 and pi0.5 pad state and actions to this width (openpi's Pi0Config.action_dim); wider ones cannot be fed to them.
MODEL_ACTION_DIM = 32

# The spec field that sets each model input's width: what a message tells the user to change.
SPEC_FIELD = {"state": "state_keys", "actions": "action_dim"}

# The default wording of a norm-stats width mismatch. Fields: key, got, expected, env_id, field.
NORM_STATS_MISMATCH = (
    "norm stats {key} width {got} != model input width {expected} for {env_id} ({field} in "
    "tasks/core/specs.py); recompute the stats from a dataset converted with the current TaskSpec"
)

GCS_HOST = "storage.googleapis.com"  # openpi's gs:// assets: pi0_base weights, the PaliGemma tokenizer
HUB_HOST = "huggingface.co"  # ManiSkill's demo hub


def model_input_widths(spec: TaskSpec) -> dict[str, int]:
    """The widths of the model's two vector inputs for `spec`, under the keys openpi's norm stats use."""
    return {"state": spec.state_dim, "actions": spec.action_dim}


def check_fits_model(
    env_id: str, widths: Mapping[str, int], model_dim: int = MODEL_ACTION_DIM, *, error: type[Exception] = ValueError
) -> None:
    """Refuses a state or action wider than the model's action vector.

    Why: openpi pads state and actions up to `model_dim` (32 for pi0 and pi0.5) and cannot cut them down, so a wider
    one fails deep inside training or, worse, at inference. Refused before any compute, naming the spec field to change.
    `widths`: {"state": ..., "actions": ...} (`model_input_widths`); `error`: the caller's error class.
    """
    for key, width in widths.items():
        if width > model_dim:
            fix = (
                "use fewer or narrower state_keys"
                if key == "state"
                else f"use a control_mode with at most {model_dim} action values"
            )
            raise error(
                f"{env_id}: {key} width {width} exceeds the model's action_dim {model_dim} (openpi pads state "
                f"and actions to it and cannot fit wider ones): {fix} in tasks/core/specs.py"
            )


def check_norm_stats_widths(
    env_id: str,
    stats_widths: Mapping[str, int],
    expected: Mapping[str, int],
    model_dim: int = MODEL_ACTION_DIM,
    *,
    error: type[Exception] = ValueError,
    mismatch: str = NORM_STATS_MISMATCH,
) -> None:
    """Refuses norm stats whose state or action widths are not the spec's, or do not fit the model.

    Why: stats computed from a dataset converted with an older TaskSpec (the manual workflow's 18-vs-7 bug) would
    normalise the wrong dimensions or crash openpi's Normalize mid-training; checked where the stats are written and
    again where training reads them, before any compute.
    `stats_widths`: the last-axis width of each key's mean in norm_stats.json (a missing key is refused);
    `expected`: `model_input_widths(spec)`; `mismatch`: the wording of a width mismatch (a format string with the
    fields key, got, expected, env_id and field), for a stage whose message says where its stats came from.
    """
    for key, width in expected.items():
        if key not in stats_widths:
            raise error(f"norm stats lack {key!r}; recompute them with the stats stage for {env_id}")
        got = stats_widths[key]
        if got != width:
            raise error(
                mismatch.format(key=key, got=got, expected=width, env_id=env_id, field=SPEC_FIELD.get(key, key))
            )
        check_fits_model(env_id, {key: got}, model_dim, error=error)


# What a train artifact that does not record its tower was trained with: openpi's Pi0 (So400m/14) built every preset
# until the tiny preset got a small tower (train stage code version 4).
UNRECORDED_VISION_TOWER = "So400m/14"


def recorded_vision_tower(train_metrics: Mapping) -> str:
    """The SigLIP variant a train artifact's weights were trained with (its manifest's metrics)."""
    return train_metrics.get("vision_tower") or UNRECORDED_VISION_TOWER


def check_vision_tower(
    checkpoint: str, train_metrics: Mapping, expected: str, use: str, error: type[Exception]
) -> None:
    """Refuses to load `checkpoint` into a model whose vision tower differs from the one it was trained with (a shape
    mismatch deep in openpi's loader otherwise, or worse, a tower silently left at random initialisation)."""
    recorded = recorded_vision_tower(train_metrics)
    if recorded != expected:
        raise error(
            f"{checkpoint} was trained with the SigLIP {recorded} vision tower, but {use} builds {expected}: its "
            "weights do not fit. Train a new checkpoint with the current code (or start this one from scratch)"
        )


def unreachable(host: str, port: int = 443, timeout_s: float = 5.0) -> OSError | None:
    """None when a TCP connection to `host:port` opens within `timeout_s`, else the error that stopped it.

    Why: on an offline or firewalled machine the libraries' own downloads (ManiSkill's hub, openpi's gs:// cache)
    hang or retry for minutes; a stage probes first and fails in seconds with a message naming the offline
    alternative. Returns the error rather than raising it, so that each caller names what it needed and the fix.
    """
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return e
    return None
