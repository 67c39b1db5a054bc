"""The params form of the pipeline DAGs, and its resolution into one validated run config.

Every stage's params dataclass is built and validated in the first task (`resolve_run_config`), so a
bad value (unknown env id, absurd count, unknown control mode, bad artifact root) fails the run before
any work starts. A run started by a demos asset event may override the env id and demo source through
the event's `extra` (e.g. `{"env_id": "StackCube-v1", "demo_source": "s3", "demo_source_uri": "s3://..."}`).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param

from tasks.artifacts import ArtifactStore
from tasks.common import default_root
from tasks.specs import CONTROL_MODES, TASK_SPECS
from tasks.train import PRESETS

ASSET_OVERRIDES = ("env_id", "demo_source", "demo_source_uri", "demo_count")


def common_params() -> dict[str, Param]:
    """Everything but the env id (the SFT DAG takes one, the backfill DAG a list)."""
    return {
        "demo_source": Param("motionplanning", enum=["motionplanning", "hub", "s3"],
                             description="motionplanning: generate offline with ManiSkill's planner; hub: ManiSkill's "
                                         "download_demo; s3: a mirrored demo folder (demo_source_uri)"),
        "demo_source_uri": Param("", type="string", description="for demo_source=s3: folder with trajectory.h5 and .json"),
        "demo_count": Param(4, type="integer", minimum=1, maximum=100000, description="demos used for training"),
        "holdout_count": Param(1, type="integer", minimum=1, maximum=10000,
                               description="demos kept out of training (the first ones of the demo set), for verify's held-out frames"),
        "seed": Param(0, type="integer", minimum=0, maximum=2**31 - 1, description="first motion-planning seed"),
        "control_mode": Param("pd_ee_delta_pose", enum=list(CONTROL_MODES), description="control mode the demos are replayed into"),
        "episodes_per_shard": Param(50, type="integer", minimum=1, maximum=10000,
                                    description="render shard size: large demo sets render in parallel shards"),
        "min_success_ratio": Param(0.8, type="number", minimum=0, maximum=1,
                                   description="render fails when fewer replays succeed than this"),
        "preset": Param("tiny", enum=list(PRESETS),
                        description="tiny: CPU-sized pi0 for tests and demo; lora: gemma_2b_lora + gemma_300m_lora; full: full fine-tune"),
        "steps": Param(4, type="integer", minimum=1, maximum=10_000_000, description="training steps"),
        "batch_size": Param(1, type="integer", minimum=1, maximum=4096, description="global batch size"),
        "action_horizon": Param(10, type="integer", minimum=1, maximum=256, description="pi0 action chunk length"),
        "save_interval": Param(0, type="integer", minimum=0, description="checkpoint (resume point) every N steps; 0: at the end"),
        "pretrained_uri": Param("", type="string", pattern=r"^((gs|s3|file)://\S+|/\S+)?$",
                                description="pi0_base params (gs://openpi-assets/checkpoints/pi0_base/params, s3://..., /path); "
                                            "empty: train from scratch"),
        "wandb": Param(False, type="boolean", description="log training to Weights & Biases (offline unless WANDB_MODE=online)"),
        "wandb_conn_id": Param(os.environ.get("PIPELINE_WANDB_CONN_ID", ""), type="string",
                               description="Airflow connection holding the W&B API key (password; host for self-hosted "
                                           "W&B; extra mode/entity); empty: W&B reads WANDB_API_KEY from the environment"),
        "xla_mem_fraction": Param(0.9, type="number", minimum=0.05, maximum=1, description="XLA_PYTHON_CLIENT_MEM_FRACTION for training"),
        "eval_episodes": Param(2, type="integer", minimum=0, maximum=10000, description="closed-loop evaluation episodes"),
        "eval_max_steps": Param(0, type="integer", minimum=0, maximum=100000, description="closed-loop step limit; 0: the task's"),
        "holdout_frames": Param(4, type="integer", minimum=1, maximum=10000, description="held-out frames for open-loop checks"),
        "min_success_rate": Param(0.0, type="number", minimum=0, maximum=1, description="verify fails below this success rate"),
        "artifact_root": Param(default_root(), type="string", pattern=r"^(file:///|s3://)[A-Za-z0-9._/-]+$",
                               description="where artifacts go: file:///abs/dir (embedded) or s3://bucket/prefix"),
        "s3_conn_id": Param(os.environ.get("PIPELINE_S3_CONN_ID", ""), type="string",
                            description="Airflow aws connection for s3:// roots (endpoint_url for MinIO)"),
    }


def sft_params() -> dict[str, Param]:
    return {"env_id": Param("PickCube-v1", enum=sorted(TASK_SPECS), description="ManiSkill task (registered in tasks/specs.py)"),
            **common_params()}


def resolve_run_config(params: dict[str, Any], asset_events: dict | None = None, env_id: str | None = None) -> dict[str, Any]:
    """Merges asset-event overrides, builds every stage's params and validates them all; returns plain data."""
    from tasks.download import DownloadParams
    from tasks.render import RenderParams
    config = {k: v for k, v in params.items()}
    if env_id is not None:
        config["env_id"] = env_id
    for events in (asset_events or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            config.update({k: v for k, v in extra.items() if k in ASSET_OVERRIDES})
    ArtifactStore.validate_root(config["artifact_root"])
    c = config
    DownloadParams(env_id=c["env_id"], source=c["demo_source"], count=c["demo_count"] + c["holdout_count"], seed=c["seed"],
                   source_uri=c["demo_source_uri"]).validate()
    RenderParams(env_id=c["env_id"], control_mode=c["control_mode"], min_success_ratio=c["min_success_ratio"]).validate()
    train_params(c).validate()
    verify_params(c).validate()
    return config


def train_params(c: dict[str, Any]):
    from tasks.train import TrainParams

    return TrainParams(env_id=c["env_id"], preset=c["preset"], steps=c["steps"], batch_size=c["batch_size"],
                       action_horizon=c["action_horizon"], save_interval=c["save_interval"], seed=c["seed"],
                       pretrained_uri=c["pretrained_uri"], wandb=c["wandb"], xla_mem_fraction=c["xla_mem_fraction"])


def verify_params(c: dict[str, Any]):
    from tasks.verify import VerifyParams

    return VerifyParams(env_id=c["env_id"], holdout_frames=c["holdout_frames"], episodes=c["eval_episodes"],
                        max_steps=c["eval_max_steps"], seed=c["seed"], min_success_rate=c["min_success_rate"])
