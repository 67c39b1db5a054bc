"""tasks/core/checks.py: the model-width, norm-stats-width and offline checks the stages share, accepted and refused."""

from __future__ import annotations

import socket
import time

import pytest

from tasks.core.checks import (
    GCS_HOST,
    HUB_HOST,
    MODEL_ACTION_DIM,
    NORM_STATS_MISMATCH,
    check_fits_model,
    check_norm_stats_widths,
    model_input_widths,
    unreachable,
)
from tasks.core.specs import get_spec

ENV_ID = "PickCube-v1"  # state 19 wide (qpos 9, tcp_pose 7, goal_pos 3), actions 7


class StageError(ValueError):
    """Stands for a stage's own error class (StatsError, TrainError, ConfigError)."""


def test_model_input_widths_are_the_specs_state_and_action_widths_under_openpis_keys():
    assert MODEL_ACTION_DIM == 32
    assert model_input_widths(get_spec(ENV_ID)) == {"state": 19, "actions": 7}


def test_widths_up_to_the_models_action_dim_fit():
    check_fits_model(ENV_ID, {"state": 32, "actions": 32})
    check_fits_model(ENV_ID, {"state": 19, "actions": 7})
    check_fits_model(ENV_ID, {"state": 8}, model_dim=8)


@pytest.mark.parametrize(
    "key, fix",
    [("state", "use fewer or narrower state_keys"), ("actions", "use a control_mode with at most 32 action values")],
)
def test_a_width_past_the_models_action_dim_is_refused_naming_the_spec_field(key, fix):
    widths = {"state": 19, "actions": 7, key: 33}
    with pytest.raises(StageError) as info:
        check_fits_model(ENV_ID, widths, error=StageError)
    message = str(info.value)
    assert message.startswith(f"{ENV_ID}: {key} width 33 exceeds the model's action_dim 32 (openpi pads")
    assert message.endswith(f"{fix} in tasks/core/specs.py")


def test_the_model_width_is_a_parameter_and_the_default_error_a_value_error():
    with pytest.raises(ValueError, match="state width 9 exceeds the model's action_dim 8"):
        check_fits_model(ENV_ID, {"state": 9}, model_dim=8)


def test_norm_stats_with_the_specs_widths_pass():
    expected = model_input_widths(get_spec(ENV_ID))
    check_norm_stats_widths(ENV_ID, {"state": 19, "actions": 7}, expected)
    check_norm_stats_widths(ENV_ID, {"state": 19, "actions": 7, "extra": 3}, expected)  # other keys are not read


@pytest.mark.parametrize("key", ["state", "actions"])
def test_norm_stats_lacking_a_key_are_refused(key):
    stats = {"state": 19, "actions": 7}
    del stats[key]
    with pytest.raises(
        StageError, match=f"^norm stats lack '{key}'; recompute them with the stats stage for {ENV_ID}$"
    ):
        check_norm_stats_widths(ENV_ID, stats, {"state": 19, "actions": 7}, error=StageError)


def test_a_norm_stats_width_mismatch_is_refused_naming_the_spec_field_and_the_fix():
    expected = model_input_widths(get_spec(ENV_ID))
    with pytest.raises(StageError) as info:  # the manual workflow's bug: stats of an 18-wide state
        check_norm_stats_widths(ENV_ID, {"state": 18, "actions": 7}, expected, error=StageError)
    assert str(info.value) == (
        "norm stats state width 18 != model input width 19 for PickCube-v1 (state_keys in "
        "tasks/core/specs.py); recompute the stats from a dataset converted with the current "
        "TaskSpec"
    )
    with pytest.raises(StageError, match=r"actions width 18 != model input width 7 for PickCube-v1 \(action_dim in"):
        check_norm_stats_widths(ENV_ID, {"state": 19, "actions": 18}, expected, error=StageError)


def test_a_stage_words_the_mismatch_its_own_way():
    wording = "{key} stats have width {got} but {env_id} wants {expected} ({field})"
    with pytest.raises(StageError, match=r"^actions stats have width 18 but PickCube-v1 wants 7 \(action_dim\)$"):
        check_norm_stats_widths(
            ENV_ID, {"state": 19, "actions": 18}, {"state": 19, "actions": 7}, error=StageError, mismatch=wording
        )
    assert "{field}" in NORM_STATS_MISMATCH and "{expected}" in NORM_STATS_MISMATCH


def test_norm_stats_that_match_a_spec_too_wide_for_the_model_are_refused():
    with pytest.raises(StageError, match="state width 40 exceeds the model's action_dim 32"):
        check_norm_stats_widths(ENV_ID, {"state": 40, "actions": 7}, {"state": 40, "actions": 7}, error=StageError)
    check_norm_stats_widths(ENV_ID, {"state": 40, "actions": 7}, {"state": 40, "actions": 7}, model_dim=64)


def test_the_hosts_probed_are_named_once():
    assert (GCS_HOST, HUB_HOST) == ("storage.googleapis.com", "huggingface.co")


def test_a_listening_host_is_reachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable("127.0.0.1", server.getsockname()[1], timeout_s=2) is None


def test_a_host_that_refuses_is_reported_in_seconds_with_the_error():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.monotonic()
    error = unreachable("127.0.0.1", port, timeout_s=2)
    assert isinstance(error, OSError) and str(error)
    assert time.monotonic() - t0 < 5
