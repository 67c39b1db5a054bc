"""The stats stage's refusals and its action chunking (the parts that make training misbehave silently)."""

import numpy as np
import pytest
from openpi.shared.normalize import NormStats

from tasks.core.specs import get_spec
from tasks.stats import StatsError, action_chunks, check_stats

SPEC = get_spec("PickCube-v1")


def _stats(state_width: int, action_width: int, state_std=None, action_std=None) -> dict:
    std = np.ones(state_width) if state_std is None else np.asarray(state_std)
    a_std = np.ones(action_width) if action_std is None else np.asarray(action_std)
    return {
        "state": NormStats(mean=np.zeros(state_width), std=std),
        "actions": NormStats(mean=np.zeros(action_width), std=a_std),
    }


def test_matching_widths_pass():
    check_stats(SPEC, _stats(SPEC.state_dim, 7), min_std=1e-5)


def test_manual_workflow_18_vs_7_mismatch_is_refused():
    with pytest.raises(StatsError, match="actions stats have width 18 but the model input for PickCube-v1 has width 7"):
        check_stats(SPEC, _stats(SPEC.state_dim, 18), min_std=1e-5)
    with pytest.raises(StatsError, match="state stats have width 7 .* has width 19"):
        check_stats(SPEC, _stats(7, 7), min_std=1e-5)


def test_near_zero_std_names_the_dimension():
    std = np.ones(SPEC.state_dim)
    std[17] = 1e-9  # goal_pos y
    with pytest.raises(StatsError, match=r"extra/goal_pos\[1\] \(std 1.00e-09\)"):
        check_stats(SPEC, _stats(SPEC.state_dim, 7, std), min_std=1e-5)


def test_constant_action_dimension_is_allowed():
    std = np.ones(7)
    std[6] = 0.0  # a gripper that never opens (PushCube)
    check_stats(SPEC, _stats(SPEC.state_dim, 7, action_std=std), min_std=1e-5)


def test_action_chunks_repeat_the_last_action_at_episode_end():
    actions = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    chunks = action_chunks(actions, 3)
    assert chunks.shape == (4, 3, 2)
    np.testing.assert_array_equal(chunks[:, :, 0], [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]])
