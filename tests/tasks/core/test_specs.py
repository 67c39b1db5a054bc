import numpy as np
import pytest

from tasks.core.specs import TASK_SPECS, EnvLayout, SpecError, StateKey, TaskSpec, get_spec


def test_registry_has_the_required_tasks():
    assert {"PickCube-v1", "StackCube-v1", "PushCube-v1"} <= set(TASK_SPECS)


def test_pickcube_state_carries_the_goal_the_camera_cannot_see():
    spec = get_spec("PickCube-v1")
    assert "extra/goal_pos" in spec.state_keys
    assert spec.state_dim == 9 + 7 + 3
    assert spec.fps == 20 and spec.action_dim == 7 and spec.control_mode == "pd_ee_delta_pose"


def test_unknown_env_id_names_the_registered_ones():
    with pytest.raises(SpecError, match="unknown env id 'Nope-v0'.*PickCube-v1"):
        get_spec("Nope-v0")


def test_assemble_state_slices_and_orders_keys():
    spec = get_spec("PickCube-v1")
    obs = {
        "agent": {"qpos": np.arange(9.0), "qvel": np.zeros(9)},
        "extra": {"tcp_pose": np.arange(10.0, 17.0), "goal_pos": np.array([7.0, 8.0, 9.0])},
    }
    state = spec.assemble_state(obs)
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, np.concatenate([np.arange(9.0), np.arange(10.0, 17.0), [7, 8, 9]]))
    episode = {g: {k: np.stack([v, v]) for k, v in d.items()} for g, d in obs.items()}
    assert spec.assemble_state(episode).shape == (2, 19)


def test_assemble_state_missing_key_is_a_clear_error():
    with pytest.raises(SpecError, match="no 'extra/goal_pos'"):
        get_spec("PickCube-v1").assemble_state({"agent": {"qpos": np.zeros(9)}, "extra": {"tcp_pose": np.zeros(7)}})


@pytest.mark.parametrize("bad", ["qpos", "agent/qpos[1:x]", "../etc/passwd", "agent/qpos[0:7]; rm"])
def test_bad_state_keys_are_refused(bad):
    with pytest.raises(SpecError):
        StateKey.parse(bad)


def test_a_new_task_is_one_spec():
    spec = TaskSpec(
        env_id="PegInsertionSide-v1", prompt="insert the peg", state_keys=("agent/qpos[0:7]",), state_widths=(9,)
    )
    assert spec.state_dim == 7
    with pytest.raises(SpecError, match="unknown control mode"):
        TaskSpec(env_id="X-v1", prompt="x", control_mode="teleport")


def test_render_work_is_split_evenly_and_in_order():
    from tasks.render import balanced_groups

    assert balanced_groups([74, 74, 50, 86, 60, 88, 49, 70], 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert balanced_groups([1, 100], 2) == [[0], [1]]
    assert balanced_groups([10], 4) == [[0]]
    groups = balanced_groups([5] * 9, 3)
    assert [i for g in groups for i in g] == list(range(9)) and len(groups) == 3


def test_render_workers_share_the_cores_with_lavapipes_threads(monkeypatch, tmp_path):
    """One rasterizer thread per worker when every core has one; a shard with fewer episodes gives the rest to lavapipe."""
    from tasks.render import worker_env

    icd = tmp_path / "lvp_icd.json"
    icd.write_text("{}")  # only its presence is read here
    monkeypatch.setenv("PIPELINE_LAVAPIPE_ICD", str(icd))
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    threads = {workers: worker_env("cpu", workers)[0]["LP_NUM_THREADS"] for workers in (0, 8, 3, 1)}
    assert threads == {0: "1", 8: "1", 3: "2", 1: "8"}
    env, device = worker_env("cpu", 1)
    assert device == "cpu" and env["VK_ICD_FILENAMES"] == str(icd) and env["OMP_NUM_THREADS"] == "1"


def _layout(**changes) -> "EnvLayout":
    from tasks.core.specs import EnvLayout

    layout = dict(
        env_id="PickCube-v1",
        robot="panda",
        control_mode="pd_ee_delta_pose",
        control_freq=20,
        action_dim=7,
        sensors={"base_camera": (128, 128)},
        obs_widths={"agent/qpos": 9, "agent/qvel": 9, "extra/tcp_pose": 7, "extra/goal_pos": 3},
    )
    return EnvLayout(**{**layout, **changes})


def test_a_spec_that_fits_its_env_has_no_problems():
    from tasks.core.specs import spec_problems

    assert spec_problems(get_spec("PickCube-v1"), _layout()) == []


def test_spec_problems_name_the_valid_choices():
    from tasks.core.specs import check_spec, spec_problems

    spec = TaskSpec(
        env_id="PickCube-v1",
        prompt="pick",
        cameras=(("hand_camera", "left_wrist_0_rgb"),),
        state_keys=("agent/qpos[0:9]", "extra/obj_pose", "extra/tcp_pose"),
        state_widths=(9, 7, 6),
        action_dim=8,
        fps=10,
    )
    problems = spec_problems(spec, _layout())
    assert any("camera 'hand_camera'" in p and "['base_camera']" in p for p in problems)
    assert any("'extra/obj_pose'" in p and "state mode only" in p and "'extra/goal_pos'" in p for p in problems)
    assert any("state_widths says 6 but extra/tcp_pose is 7" in p for p in problems)
    assert any("action_dim is 8" in p and "takes 7" in p for p in problems)
    assert any("fps is 10" in p and "20 Hz" in p for p in problems)
    with pytest.raises(SpecError, match="derive PickCube-v1"):
        check_spec(spec, _layout())


def test_spec_refuses_unknown_slots_doubled_slots_and_empty_prompts():
    with pytest.raises(SpecError, match="not one of pi0's"):
        TaskSpec(env_id="X-v1", prompt="x", cameras=(("base_camera", "front"),))
    with pytest.raises(SpecError, match="two cameras map to one pi0 slot"):
        TaskSpec(env_id="X-v1", prompt="x", cameras=(("a", "base_0_rgb"), ("b", "base_0_rgb")))
    with pytest.raises(SpecError, match="prompt is empty"):
        TaskSpec(env_id="X-v1", prompt=" ")


def test_derive_helpers_map_wrist_cameras_and_slice_constant_dims():
    from tasks.sim.probe import camera_slots, varying_slices

    assert camera_slots(["base_camera", "hand_camera"]) == (
        [("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")],
        [],
    )
    assert camera_slots(["side", "base_camera", "a_wrist", "b_wrist", "c_wrist"]) == (
        [("base_camera", "base_0_rgb"), ("a_wrist", "left_wrist_0_rgb"), ("b_wrist", "right_wrist_0_rgb")],
        ["side", "c_wrist"],
    )
    values = np.stack([np.arange(10.0), np.full(10, 2.0), np.arange(10.0) ** 2, np.zeros(10), np.ones(10)], axis=-1)
    assert varying_slices(values, 1e-5) == [(0, 1), (2, 3)]
    assert varying_slices(values[:, 3:], 1e-5) == []


def test_cameras_of_different_sizes_are_refused_with_the_fix():
    from tasks.core.specs import spec_problems

    spec = TaskSpec(
        env_id="PickCube-v1",
        prompt="pick",
        cameras=(("base_camera", "base_0_rgb"), ("hand_camera", "left_wrist_0_rgb")),
        state_keys=("agent/qpos[0:9]",),
        state_widths=(9,),
    )
    layout = _layout(sensors={"base_camera": (128, 128), "hand_camera": (240, 320)})
    assert any("different sizes" in p and "camera_size" in p for p in spec_problems(spec, layout))
