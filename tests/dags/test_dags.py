"""The Airflow wiring: DAG integrity, the params form, queues/pools, and real dag.test() runs end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT
from tests.fixtures.runs import SMALL_RUN_STAGES

SFT = "maniskill_openpi_sft"
BACKFILL = "maniskill_openpi_backfill"
# The smallest honest run: tiny preset, a few demos, short closed-loop evaluation.
SMALL_RUN = {
    "demo_count": 3,
    "holdout_count": 1,
    "episodes_per_shard": 2,
    "steps": 2,
    "eval_episodes": 1,
    "eval_max_steps": 10,
    "holdout_frames": 2,
}


@pytest.fixture(scope="module")
def airflow_db():
    sys.path.insert(0, str(PROJECT / "plugins"))
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": f"{PROJECT}:{PROJECT / 'plugins'}"},
    )
    yield


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {SFT, BACKFILL, "maniskill_openpi_maintenance", "maniskill_openpi_rollback"} <= set(dagbag.dags)


def test_sft_stage_order_and_mapping(dagbag):
    """The graph is the pipeline: no edge from the config task to everything, none from everything to the report."""
    dag = dagbag.dags[SFT]
    downstream = {t: dag.get_task(t).downstream_task_ids for t in dag.task_ids}
    assert downstream == {
        "resolve": {"download"},
        "download": {"shards"},
        "shards": {"render"},
        "render": {"convert", "convert_holdout"},
        "convert": {"stats", "train"},
        "stats": {"train"},
        "train": {"candidates"},
        "candidates": {"verify"},
        "convert_holdout": {"train", "verify", "confirm"},
        "verify": {"select"},
        "select": {"confirm"},
        "confirm": {"approve", "promote"},
        "approve": {"promote"},
        "promote": {"report"},
        "report": set(),
    }
    assert "MappedOperator" in type(dag.get_task("render")).__name__  # render is mapped over shards
    assert "MappedOperator" in type(dag.get_task("verify")).__name__  # verify over the kept checkpoints
    # the backfill's group is the same pipeline, render per split
    bf = dagbag.dags[BACKFILL]
    down = {
        t.removeprefix("pipeline."): {d.removeprefix("pipeline.") for d in bf.get_task(t).downstream_task_ids}
        for t in bf.task_ids
    }
    assert down["registered_tasks"] == {"resolve"} and down["resolve"] == {"download"}
    assert down["shards"] == {"render", "render_holdout"} and down["train"] == {"candidates"}
    assert down["candidates"] == {"verify"} and down["verify"] == {"select"} and down["select"] == {"confirm"}
    assert down["confirm"] == {"approve", "promote"}
    assert down["approve"] == {"promote"} and down["promote"] == {"report"}
    # both DAGs move the policy asset when they promote
    assert [a.name for a in dag.get_task("promote").outlets] == [
        a.name for a in bf.get_task("pipeline.promote").outlets
    ]


def test_gpu_stages_use_the_gpu_queue_and_pool_cpu_stages_do_not(dagbag):
    for dag_id, prefix in ((SFT, ""), (BACKFILL, "pipeline.")):
        dag = dagbag.dags[dag_id]
        for t in dag.tasks:
            name = t.task_id.removeprefix(prefix)
            if name in ("train", "verify", "confirm"):
                assert (t.queue, t.pool) == ("gpu", "gpu"), t.task_id
            else:
                assert t.queue != "gpu" and t.pool != "gpu", t.task_id


def test_schedule_is_cron_or_new_demos(dagbag):
    dag = dagbag.dags[SFT]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.asset_condition.name == "maniskill_demos"
    assert dag.timetable.timetable.expression == "0 3 * * 0"
    assert type(dagbag.dags[BACKFILL].timetable).__name__ == "NullTimetable"  # triggered by hand


def test_params_form_validates(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags[SFT].params
    for name in params:
        params.get_param(name).resolve()  # every default is valid
    bad = {
        "env_id": "PickCub-v1",
        "demo_count": -3,
        "control_mode": "pd_teleport",
        "artifact_root": "../../etc",
        "min_success_ratio": 1.5,
        "preset": "huge",
        "steps": 0,
        "batch_size": 0,
        "pretrained_uri": "weights here",
        "wandb": "yes",
    }
    for name, value in bad.items():
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(value)
    assert all(params.get_param(name).description for name in params)
    with pytest.raises(ParamValidationError):
        dagbag.dags[BACKFILL].params.get_param("env_ids").resolve(["NoSuchTask-v9"])
    # optional settings accept null (a cleared form field): "preset default", "the spec's", "none"
    for name in ("steps", "batch_size", "eval_max_steps", "pretrained_uri", "demo_source_uri", "s3_conn_id"):
        assert params.get_param(name).resolve(None) is None


def test_production_form_defaults_reach_the_presets_steps_and_batch():
    from tasks.airflow_tasks.params import resolve_run_config, run_params
    from tasks.core.run_config import RunConfig
    from tasks.train import openpi_train_config

    form = {k: p.resolve() for k, p in run_params("production").items()}
    assert form["preset"] == "lora" and form["steps"] is None and form["batch_size"] is None
    os.environ["PIPELINE_PROFILE"] = "production"
    try:
        cfg = RunConfig.from_dict(resolve_run_config(form, conf={}))
    finally:
        os.environ["PIPELINE_PROFILE"] = "demo"
    assert cfg.profile == "production"
    train = openpi_train_config(cfg.train_params())
    assert (train.num_train_steps, train.batch_size) == (30_000, 32)


def test_resolve_refuses_bad_combinations_and_typos_before_work():
    from airflow.sdk.exceptions import AirflowFailException

    from tasks.airflow_tasks.params import resolve_run_config, run_params

    defaults = {k: p.value for k, p in run_params().items()}
    # AirflowFailException: the task fails at once, without its retries
    with pytest.raises(AirflowFailException, match="match no released checkpoint"):
        resolve_run_config({**defaults, "pretrained_uri": "gs://openpi-assets/checkpoints/pi0_base/params"})
    with pytest.raises(AirflowFailException, match="source_uri"):
        resolve_run_config({**defaults, "demo_source": "s3"})
    # Airflow merges a trigger's conf into params, unknown keys included: the conf itself is checked
    with pytest.raises(AirflowFailException, match=r"'demo_cuont' \(did you mean 'demo_count'\?\)"):
        resolve_run_config({**defaults, "demo_cuont": 8}, conf={"demo_cuont": 8})

    class Event:  # a demos asset event can name the task and the demo folder
        extra = {"env_id": "StackCube-v1", "demo_source": "s3", "demo_source_uri": "s3://demos/stack"}

    cfg = resolve_run_config(defaults, {}, {"maniskill_demos": [Event()]})
    assert cfg["env_id"] == "StackCube-v1" and cfg["demo_source_uri"] == "s3://demos/stack" and cfg["profile"] == "demo"
    Event.extra = {**Event.extra, "demo_cout": 3}
    with pytest.raises(AirflowFailException, match="did you mean 'demo_count'"):
        resolve_run_config(defaults, {}, {"maniskill_demos": [Event()]})


def _manifests(store: Path) -> list[tuple[str, str, str]]:
    """(env id, stage, key) of every complete artifact."""
    return sorted(
        (p.parent.parent.parent.name, p.parent.parent.name, p.parent.name) for p in store.rglob("manifest.json")
    )


@pytest.fixture(scope="module")
def sft_run(dagbag, tmp_path_factory):
    store = tmp_path_factory.mktemp("dag_store")
    run = dagbag.dags[SFT].test(run_conf={**SMALL_RUN, "artifact_root": f"file://{store}"})
    return run, store


@pytest.mark.sim
@pytest.mark.train
def test_dag_test_runs_every_stage_end_to_end(sft_run):
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    run, store = sft_run
    assert run.state == "success"
    stages = [s for _, s, _ in _manifests(store)]
    # 3 training demos in shards of 2 -> two train shards, plus the held-out shard
    assert sorted(stages) == SMALL_RUN_STAGES
    # 1 closed-loop episode of a 2-step tiny policy with no success threshold: verified "unchecked", not promoted
    xcoms = _run_xcoms(run.run_id)
    assert xcoms["verify"][0]["metrics"]["verdict"] == "unchecked" and xcoms["verify"][0]["metrics"]["harness"]["ok"]
    # one checkpoint kept (the demo profile): verified on the protocol's seeds, so confirm is that verification
    assert xcoms["select"][0]["metrics"]["verify"] == xcoms["verify"][0]["uri"] == xcoms["confirm"][0]["uri"]
    assert xcoms["confirm"][0]["cache_hit"]
    assert not xcoms["promote"][0]["metrics"]["promoted"] and "unchecked" in xcoms["promote"][0]["metrics"]["reason"]
    assert not (store / "PickCube-v1" / "latest.json").exists()
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=SFT, run_id=run.run_id).all()
        assert {ti.state for ti in tis} == {"success"}
        assert len([ti for ti in tis if ti.task_id == "render"]) == 3  # mapped: one task instance per shard
    run_json = json.loads(next(store.glob("PickCube-v1/runs/*/run.json")).read_text())
    assert run_json["run_id"] == run.run_id
    # 1 download, 3 render shards, 2 converts, stats, train, verify, select, confirm, promote: each with its time and cache
    assert [s["stage"].split("[")[0] for s in run_json["stages"]] == [
        "download",
        "render",
        "render",
        "render",
        "convert",
        "convert_holdout",
        "stats",
        "train",
        "verify",
        "select",
        "confirm",
        "promote",
    ]
    assert run_json["selected_step"] == 2
    assert run_json["promotion"]["promoted"] is False and "unchecked" in run_json["promotion"]["reason"]
    assert all(s["seconds"] >= 0 and s["cache_hit"] in (True, False) for s in run_json["stages"])


def _run_xcoms(run_id: str, dag_id: str = SFT) -> dict[str, list]:
    """Stage results of one DAG run, by task id (mapped tasks: in map index order)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out: dict[str, list] = {}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, key="return_value", dag_ids=dag_id)).all()
        for row in sorted(rows, key=lambda r: (r.task_id, r.map_index)):
            out.setdefault(row.task_id, []).append(XComModel.deserialize_value(row))
    return out


@pytest.mark.sim
@pytest.mark.train
def test_run_report_opens_in_headless_chromium_with_its_figures(sft_run, tmp_path):
    from tests.fixtures.browser import chromium_available, inspect_page

    if not chromium_available():
        pytest.fail("Chromium and chromedriver are needed (tools/setup_system.sh installs them)")
    run, store = sft_run
    report = next(store.glob("PickCube-v1/runs/*/report.html"))
    page = inspect_page(report, tmp_path / "report.png")
    assert run.run_id in page["title"]
    assert {
        "verdict",
        "verdict-reason",
        "promotion",
        "metrics",
        "stages",
        "selection",
        "frames",
        "loss",
        "actions",
        "episodes",
        "harness",
        "protocol",
        "lineage",
    } <= set(page["ids"])
    assert "UNCHECKED" in page["text"] and "PASSED" not in page["text"]
    assert "Promotion: not promoted" in page["text"]  # beside the verdict: an unchecked policy does not become latest
    images = page["images"]
    alts = [i["alt"] for i in images]
    assert "training and validation loss curves" in alts and "predicted vs demonstrated actions" in alts
    assert "closed-loop success and validation loss against step" in alts  # the checkpoint selection's figure
    selection = page["tables"]["selection"]
    assert [row[0] for row in selection[1:]] == ["2"] and selection[1][5] == "selected"
    assert any(a.startswith("held-out frame") for a in alts) and any(a.startswith("rollout step") for a in alts)
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in images), images  # every figure decoded
    stages = page["tables"]["stages"]
    assert stages[0] == ["stage", "seconds", "cache", "artifact"] and len(stages) == 13
    assert {row[0].split("[")[0] for row in stages[1:]} == {
        "download",
        "render",
        "convert",
        "convert_holdout",
        "stats",
        "train",
        "verify",
        "select",
        "confirm",
        "promote",
    }
    assert all(float(row[1]) >= 0 and row[2] in ("ran", "cache hit") for row in stages[1:])
    assert "closed-loop success rate" in page["text"] and "checkpoint" in page["text"]  # metrics and lineage rows
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.sim
@pytest.mark.train
def test_more_demos_redo_only_what_changed(sft_run, dagbag):
    """Same seed, two more demos: held-out shard and the full training shard are reused; the rest is rebuilt.
    This run keeps both steps' checkpoints (keep_period 1): verify is mapped over the two, select picks one by the
    rule, and confirm verifies it again on the protocol's seeds."""
    run, store = sft_run
    more = dagbag.dags[SFT].test(
        run_conf={
            **SMALL_RUN,
            "demo_count": SMALL_RUN["demo_count"] + 2,
            "keep_period": 1,
            "val_interval": 1,
            "artifact_root": f"file://{store}",
        }
    )
    assert more.state == "success"
    before, after = _run_xcoms(run.run_id), _run_xcoms(more.run_id)
    shards = {tuple(r["metrics"]["shard"]): r for r in after["render"]}
    old_shards = {tuple(r["metrics"]["shard"]): r for r in before["render"]}
    # 1 held-out episode first, then training shards of 2: [0,1) [1,3) [3,4) before, [0,1) [1,3) [3,5) [5,6) after
    assert sorted(old_shards) == [(0, 1), (1, 3), (3, 4)] and sorted(shards) == [(0, 1), (1, 3), (3, 5), (5, 6)]
    assert shards[(0, 1)]["cache_hit"] and shards[(1, 3)]["cache_hit"]
    assert shards[(0, 1)]["uri"] == old_shards[(0, 1)]["uri"] and shards[(1, 3)]["uri"] == old_shards[(1, 3)]["uri"]
    assert not shards[(3, 5)]["cache_hit"] and not shards[(5, 6)]["cache_hit"]
    assert after["convert_holdout"][0]["cache_hit"]  # same held-out episodes -> same held-out dataset
    for stage in ("download", "convert", "stats", "train", "verify", "select", "confirm"):
        assert not after[stage][0]["cache_hit"], stage
    # the two kept checkpoints, scored on selection seeds without the (policy-independent) harness check
    assert [v["metrics"]["checkpoint_step"] for v in after["verify"]] == [1, 2]
    assert all(v["metrics"]["verdict"] == "unchecked" and v["metrics"]["harness"] is None for v in after["verify"])
    # the selection follows the rule: most successes, then the lower validation loss at that step, then the later step
    ranked = sorted(
        after["verify"],
        key=lambda v: (-v["metrics"]["successes"], v["metrics"]["val_loss_at_step"], -v["metrics"]["checkpoint_step"]),
    )
    assert after["select"][0]["metrics"]["verify"] == ranked[0]["uri"]
    # the chosen checkpoint again, on the protocol's own seeds (not those it was chosen on), with the harness check
    confirmed, scored = after["confirm"][0]["metrics"], ranked[0]["metrics"]
    assert confirmed["checkpoint_step"] == scored["checkpoint_step"] and confirmed["harness"]["ok"]
    assert confirmed["protocol"]["seed_start"] != scored["protocol"]["seed_start"]
    assert {k: v for k, v in confirmed["protocol"].items() if k != "seed_start"} == {
        k: v for k, v in scored["protocol"].items() if k != "seed_start"
    }
    assert not after["promote"][0]["metrics"]["promoted"]


@pytest.mark.sim
@pytest.mark.train
def test_backfill_runs_only_the_new_tasks_stages(sft_run, dagbag, monkeypatch):
    """After PickCube was trained, "add" PushCube: the backfill trains PushCube; PickCube is all cache hits."""
    from tasks.core import specs

    run, store = sft_run
    before = set(_manifests(store))
    monkeypatch.setattr(specs, "TASK_SPECS", {k: specs.TASK_SPECS[k] for k in ("PickCube-v1", "PushCube-v1")})
    bf = dagbag.dags[BACKFILL].test(run_conf={**SMALL_RUN, "artifact_root": f"file://{store}"})
    assert bf.state == "success"
    new = set(_manifests(store)) - before
    assert {env for env, _, _ in new} == {"PushCube-v1"}
    assert sorted(s for _, s, _ in new) == SMALL_RUN_STAGES
    verified = [m for env, s, m in new if s == "verify"]
    assert len(verified) == 1 and not (store / "PushCube-v1" / "latest.json").exists()  # unchecked: not promoted


def test_readme_picture_is_the_dag(dagbag):
    from tools.dag_diagram import mermaid

    assert mermaid(dagbag.dags[SFT]) in (PROJECT / "README.md").read_text(), "regenerate: python tools/dag_diagram.py"


def test_run_report_link_points_at_the_report(monkeypatch, s3_endpoint):
    """The link is presigned with the run's S3 connection (s3_conn_id in resolve's result), not the API server's
    identity; without one, with boto's default chain."""
    import urllib.request
    import uuid

    import boto3
    from airflow.models.taskinstancekey import TaskInstanceKey

    monkeypatch.syspath_prepend(str(PROJECT / "plugins"))  # as Airflow's plugins folder; not left to other tests
    import run_report_link
    from run_report_link import RunReportLink, RunReportPlugin, report_url

    assert any(isinstance(link, RunReportLink) for link in RunReportPlugin.global_operator_extra_links)
    assert report_url("file:///data/PickCube-v1/verify/abc") == "file:///data/PickCube-v1/verify/abc/report.html"
    bucket, body = f"reports-{uuid.uuid4().hex[:10]}", b"<html>run report</html>"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").put_object(Bucket=bucket, Key="runs/PickCube-v1/verify/abc/report.html", Body=body)
    files_uri = f"s3://{bucket}/runs/PickCube-v1/verify/abc"

    default = report_url(files_uri)  # no connection: the environment's key (conftest's) and endpoint
    assert default.startswith(s3_endpoint) and "/runs/PickCube-v1/verify/abc/report.html" in default
    assert "X-Amz-Credential=test-key-id%2F" in default or "AWSAccessKeyId=test-key-id" in default
    with urllib.request.urlopen(default) as response:
        assert response.read() == body

    # The run's connection, with its own key and endpoint: the environment's endpoint is gone, so a URL that
    # still reaches moto got it from the connection.
    monkeypatch.setenv(
        "AIRFLOW_CONN_RUN_REPORT_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "run-key-id",
                "password": "run-secret",
                "extra": {"endpoint_url": s3_endpoint},
            }
        ),
    )
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    signed = report_url(files_uri, "run_report_s3")
    assert signed.startswith(f"{s3_endpoint}/{bucket}/runs/PickCube-v1/verify/abc/report.html?")
    assert "X-Amz-Credential=run-key-id%2F" in signed or "AWSAccessKeyId=run-key-id" in signed
    assert "test-key-id" not in signed
    with urllib.request.urlopen(signed) as response:
        assert response.read() == body

    # get_link finds the conn id in resolve's result: SFT (verify mapped, resolve not) and backfill (both in
    # the same mapped group, same index).
    results = {
        ("verify", 2): {"uri": "s3://x/a", "files_uri": files_uri},
        ("resolve", -1): {"s3_conn_id": "run_report_s3"},
        ("pipeline.verify", 1): {"uri": "s3://x/b", "files_uri": files_uri},
        ("pipeline.resolve", 1): {"s3_conn_id": "run_report_s3"},
    }
    monkeypatch.setattr(
        run_report_link, "_return_value", lambda key, task_id, map_index: results.get((task_id, map_index))
    )
    link = RunReportLink()
    for task_id, map_index in (("verify", 2), ("pipeline.verify", 1)):
        url = link.get_link(None, ti_key=TaskInstanceKey(SFT, task_id, "run", 1, map_index))
        assert url.startswith(f"{s3_endpoint}/{bucket}/") and "run-key-id" in url
    assert link.get_link(None, ti_key=TaskInstanceKey(SFT, "train", "run", 1, -1)) == ""

    monkeypatch.setenv("PIPELINE_REPORT_URL_BASE", "http://minio.local:9001/browser")
    assert (
        report_url("s3://bucket/runs/x/verify/abc")
        == "http://minio.local:9001/browser/bucket/runs/x/verify/abc/report.html"
    )


def test_wandb_connection_becomes_the_train_tasks_environment(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from tasks.airflow_tasks.glue import bind_wandb_connection

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WB_TEST",
        json.dumps(
            {"conn_type": "generic", "password": "k" * 40, "host": "wandb.example.org", "extra": {"entity": "robots"}}
        ),
    )
    bind_wandb_connection("wb_test")
    assert os.environ["WANDB_API_KEY"] == "k" * 40 and os.environ["WANDB_MODE"] == "online"
    assert os.environ["WANDB_BASE_URL"] == "https://wandb.example.org" and os.environ["WANDB_ENTITY"] == "robots"
    monkeypatch.setenv("AIRFLOW_CONN_WB_NOKEY", json.dumps({"conn_type": "generic"}))
    with pytest.raises(AirflowFailException, match="no password"):
        bind_wandb_connection("wb_nokey")
    with pytest.raises(AirflowFailException, match="does not exist"):
        bind_wandb_connection("wb_missing")


@pytest.mark.sim
@pytest.mark.train
def test_maintenance_dag_reports_the_store_of_real_runs(sft_run, dagbag):
    """The daily maintenance DAG over the store the SFT and backfill runs filled: a dry run keeps everything a run
    report or latest names and reports each task's storage (tests/tasks/test_maintenance.py covers the deletions)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    _, store = sft_run
    before = set(_manifests(store))
    run = dagbag.dags["maniskill_openpi_maintenance"].test(
        run_conf={"artifact_root": f"file://{store}", "dry_run": True, "s3_conn_id": None}
    )
    assert run.state == "success" and set(_manifests(store)) == before
    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, key="return_value", task_ids="sweep", dag_ids="maniskill_openpi_maintenance"
            )
        ).first()
        result = XComModel.deserialize_value(row)["metrics"]
    assert result["dry_run"] and result["kept"] >= 9 and result["storage_before"]["PickCube-v1"]["train"]["bytes"] > 0


def test_the_rollback_dag_moves_latest_and_names_its_run(dagbag, tmp_path):
    from tasks.core.promotions import history
    from tasks.core.store import ArtifactStore
    from tasks.promote import PromoteParams, promote
    from tests.fixtures.promotions import ENV_ID
    from tests.fixtures.promotions import verified as _verified

    root = f"file://{tmp_path}/store"
    store = ArtifactStore(root)
    a, b = _verified(store, "a", successes=4), _verified(store, "b", successes=10)
    for v in (a, b):
        promote(PromoteParams(env_id=ENV_ID), root=root, verification=v["verify"])
    run = dagbag.dags["maniskill_openpi_rollback"].test(
        run_conf={"env_id": ENV_ID, "artifact_root": root, "s3_conn_id": None}
    )
    assert run.state == "success"
    assert store.read_json(f"{root}/{ENV_ID}/latest.json")["checkpoint"] == a["checkpoint"]
    assert history(store, ENV_ID)[0]["by"] == f"airflow maniskill_openpi_rollback {run.run_id}"


@pytest.mark.sim
@pytest.mark.train
def test_the_readme_users_dag_wires_the_installed_stage_tasks(sft_run, tmp_path, monkeypatch):
    """README's example of a user's own DAG, as printed there, built from the installed package's task functions:
    it parses, runs under dag.test(), and with the SFT run's settings and store every stage it wires is a cache hit
    on that run's artifacts (same inputs, same keys)."""
    import re
    from importlib import metadata

    from airflow.dag_processing.dagbag import DagBag

    assert metadata.distribution("maniskill-openpi-pipeline").read_text("direct_url.json")  # installed, not on a path
    code = re.search(r"<!-- user-dag -->\n```python\n(.*?)```", (PROJECT / "README.md").read_text(), re.S).group(1)
    folder = tmp_path / "user_dags"
    folder.mkdir()
    (folder / "my_training_data.py").write_text(code)
    # dag.test() runs what the metadata DB holds, synced from the configured DAG bundles: the user's folder is one more
    # (as a deployment would add it), beside the project's dags/ (Airflow's default bundle, the dags folder).
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "user-dags", "classpath": local, "kwargs": {"path": str(folder)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["my_training_data"]
    assert {t.task_id for t in dag.tasks} == {"resolve", "download", "shards", "render", "convert", "stats"}
    sft, store = sft_run
    run = dag.test(run_conf={**SMALL_RUN, "artifact_root": f"file://{store}"})
    assert run.state == "success"
    mine, theirs = _run_xcoms(run.run_id, "my_training_data"), _run_xcoms(sft.run_id)
    for task_id in ("download", "convert", "stats"):
        assert mine[task_id][0]["uri"] == theirs[task_id][0]["uri"] and mine[task_id][0]["cache_hit"], task_id
    assert len(mine["render"]) == len(theirs["render"]) and all(r["cache_hit"] for r in mine["render"])


@pytest.mark.sim
@pytest.mark.train
def test_the_direct_pipeline_and_the_demo_runner_find_every_artifact_of_the_dag_run(sft_run, tmp_path, capsys):
    """The pipeline without a deployment, both ways, on the SFT run's store: `python -m tasks.flows.pipeline` (the stage
    functions called in order) and the demo runner (tools/demo_run.py, what tools/demo.sh runs). Same run config,
    same shard plan, same keys: every stage is a cache hit of the DAG run's artifacts and only a run report is
    written, so a stage debugged by hand with tasks.flows.pipeline is the stage the DAG runs, and neither entry point can
    rot unnoticed. (bench/bench_overhead.py times the two on separate stores: P4 in docs/benchmarks.md.)"""
    from tasks.core.run_config import RunConfig
    from tasks.flows.pipeline import run_pipeline
    from tools import demo_run

    run, store = sft_run
    root = f"file://{store}"
    dag_results = _run_xcoms(run.run_id)
    direct = run_pipeline(RunConfig.build({**SMALL_RUN, "artifact_root": root}, profile="demo"))
    assert not direct["report"]["cache_hit"]
    assert all(r["cache_hit"] for name, r in direct.items() if name != "report"), {
        n: r["cache_hit"] for n, r in direct.items()
    }
    assert (
        direct["train"]["uri"] == dag_results["train"][0]["uri"]
        and direct["confirm"]["uri"] == dag_results["confirm"][0]["uri"]
    )
    assert "verification UNCHECKED" in capsys.readouterr().out

    summary_path = tmp_path / "summary.json"
    confs = [arg for k, v in SMALL_RUN.items() for arg in ("--conf", f"{k}={v}")]
    assert demo_run.main(["--env-id", "PickCube-v1", "--root", root, *confs, "--json", str(summary_path)]) == 0
    tasks = json.loads(summary_path.read_text())["tasks"]
    stages = {name: r for name, r in tasks.items() if r["cache_hit"] is not None and name != "report"}
    assert {name.split("[")[0] for name in stages} == {
        "download",
        "render",
        "convert",
        "convert_holdout",
        "stats",
        "train",
        "verify",
        "select",
        "confirm",
        "promote",
    }
    assert all(r["cache_hit"] for r in stages.values()), {n: r["cache_hit"] for n, r in stages.items()}
    printed = capsys.readouterr().out
    assert "checkpoint selection: one checkpoint evaluated" in printed and "run report:" in printed
