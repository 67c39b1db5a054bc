"""train: fine-tune pi0 or pi0.5 on a converted dataset with openpi's library, resumable, checkpoints to the store.

openpi's `scripts/train.py` is not part of the `rpent-openpi` wheel, so this is our own loop on openpi's
parts: the model and its config, `data_loader.create_data_loader` (with our ManiSkill transforms and the
stats artifact as norm stats), `optimizer`, `sharding` and `checkpoints` (orbax, the layout
`create_trained_policy` and openpi's policy server load).

- Progress goes to the task log: one line per `log_interval` steps with loss, grad norm and step time.
- W&B: off by default; when on, offline unless `WANDB_MODE=online` (and `WANDB_API_KEY`) is set.
- Resume: each checkpoint is also uploaded under `<root>/<env>/train-progress/<key>/<step>/` (a
  `COMPLETE.json` marker written last), in the background while training goes on, and the resume points it
  supersedes are deleted (`tasks/core/resume_points.py`). A rerun with the same inputs (Airflow retry, another
  worker) restores the newest complete one and continues at its step; the progress is deleted once the final
  artifact is published.
- The artifact: `checkpoint/` (`params/`, `assets/<env_id>/norm_stats.json`, `train_state/`),
  `train_log.jsonl` (per-step loss and timings) and `train_summary.json`.
- Checkpoint candidates (`keep_period`, openpi's name for it): the checkpoints of every `keep_period`-th step
  are kept too, as `candidates/<step>/` (`params/` and `assets/`: what `create_trained_policy` loads, without
  the optimizer state), so that verify can evaluate each and the pipeline keep the one that succeeds most in
  closed loop; training loss does not tell (openpi #544). A checkpoint is addressed as `<train uri>@<step>`
  (`checkpoint_ref`); the plain URI is the final one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.checkpoints import CANDIDATES, checkpoint_dir_name, checkpoint_ref, final_step, split_checkpoint_ref
from tasks.core.checks import (
    GCS_HOST,
    MODEL_ACTION_DIM,
    check_norm_stats_widths,
    check_vision_tower,
    model_input_widths,
    unreachable,
)
from tasks.core.params import LATEST, PRESET_DEFAULTS, TrainError, TrainParams, candidate_steps
from tasks.core.resume_points import ResumePoints
from tasks.core.specs import get_spec
from tasks.core.stage import StageResult, artifact_uri, require, run_stage
from tasks.core.store import COMPLETE, ArtifactStore, Manifest, latest_uri

log = logging.getLogger(__name__)

STAGE = "train"
PROGRESS_STAGE = "train-progress"
# 4: the tiny preset's small vision tower (tiny artifacts of 3 hold So400m weights), warm-up scaled to the run;
# 3: held-out validation loss (the held-out dataset is a parent)
CODE_VERSION = "4"


def link_dataset(dataset_dir: Path, repo_id: str) -> Path:
    """openpi opens datasets by repo id under HF_LEROBOT_HOME: point that name at the fetched artifact."""
    from lerobot.constants import HF_LEROBOT_HOME

    link = Path(HF_LEROBOT_HOME) / repo_id
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(Path(dataset_dir).resolve(), target_is_directory=True)
    return link


def check_norm_stats(
    spec, stats_dir: Path, model_action_dim: int, quantile: bool = False, min_range: float = 1e-5, min_std: float = 1e-5
) -> dict:
    """The manual workflow's 18-vs-7 bug, refused here before any compute: widths must match the model input
    (`tasks.core.checks.check_norm_stats_widths`, the check the stats stage makes when it writes them).

    `quantile`: the model normalises with q01/q99 (pi0.5, like openpi's loader for every non-pi0 family): they must
    be present, and no action dimension that moves (std >= `min_std`) may have q99 - q01 below `min_range`. openpi's
    quantile Normalize computes (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 without clipping, so a dimension constant on
    98 % of the frames would turn its rare moves into training targets near 1e6. (A dimension constant on every
    frame maps to -1 and back to itself: harmless. pi0.5's state is binned into 256 prompt tokens over [-1, 1],
    so out-of-range state values only saturate a bin.)
    """
    from openpi.shared import normalize

    try:
        norm_stats = normalize.load(stats_dir)
    except FileNotFoundError as e:
        raise TrainError(f"no norm_stats.json in the stats artifact ({stats_dir}); rerun the stats stage") from e
    check_norm_stats_widths(
        spec.env_id,
        {key: s.mean.shape[-1] for key, s in norm_stats.items()},
        model_input_widths(spec),
        model_action_dim,
        error=TrainError,
    )
    for key in ("state", "actions"):
        if quantile and (norm_stats[key].q01 is None or norm_stats[key].q99 is None):
            raise TrainError(
                f"norm stats {key} lack q01/q99, which quantile normalisation (pi0.5) needs: recompute them "
                "with the stats stage (openpi's RunningStats writes them)"
            )
    if quantile:
        import numpy as np

        actions = norm_stats["actions"]
        spread = np.asarray(actions.q99) - np.asarray(actions.q01)
        narrow = np.where((spread < min_range) & (np.asarray(actions.std) >= min_std))[0]
        if len(narrow):
            dims = ", ".join(f"action[{i}] (q99-q01 {spread[i]:.2e}, std {actions.std[i]:.2e})" for i in narrow)
            raise TrainError(
                f"action dimensions of {spec.env_id} that move but whose 1st and 99th percentiles coincide: "
                f"{dims}. Quantile normalisation (pi0.5) would make their rare moves training targets of "
                "~1/(q99-q01); train pi0 (z-score normalisation) on these demos, or collect demos in which "
                "these dimensions vary"
            )
    return norm_stats


def resolve_initial_weights(params: TrainParams, store: ArtifactStore) -> tuple[str, Manifest | None]:
    """The initial weights as a concrete URI, and their train manifest when they are an artifact of this store.

    `latest` becomes the promoted checkpoint's URI, so "latest" and that URI give the same cache key; an
    artifact becomes a parent of the new one (its digest is in the key, its URI in the lineage).
    """
    uri = params.weights_uri()
    if not uri:
        return "", None
    if uri == LATEST:
        latest = store.read_json(latest_uri(store, params.env_id))
        if not latest or not latest.get("checkpoint"):
            raise TrainError(
                f"pretrained_uri=latest, but no checkpoint of {params.env_id} has been promoted under "
                f"{store.root} yet: give a checkpoint URI, or run the pipeline once without it"
            )
        uri = checkpoint_ref(latest["checkpoint"], latest.get("step"))
    prefix = f"{store.root}/{params.env_id}/{STAGE}/"
    if not uri.startswith(prefix):
        return uri, None  # an openpi params directory (pi0_base or a copy of it)
    artifact, step = split_checkpoint_ref(uri.rstrip("/"))
    manifest = store.read_manifest(artifact)
    if manifest is not None:
        checkpoint_dir_name(manifest, step)  # a step the artifact did not keep is refused here, before any work
    if manifest is None:
        raise TrainError(
            f"pretrained_uri {uri} is not a complete train artifact (no manifest.json): use a published "
            "train artifact's URI"
        )
    check_vision_tower(
        uri,
        manifest.metrics,
        PRESET_DEFAULTS[params.preset].vision_tower,
        f"a warm start of the {params.preset} preset",
        TrainError,
    )
    parent_preset = manifest.params.get("preset")
    if (parent_preset == "tiny") != (params.preset == "tiny"):
        raise TrainError(
            f"pretrained_uri {uri} holds {parent_preset!r} weights, which do not fit the {params.preset!r} "
            "preset's model: warm-start from a checkpoint of the same model size"
        )
    if parent_preset == "lora" and params.preset == "full":
        raise TrainError(
            f"pretrained_uri {uri} holds lora weights: its fine-tuning lives in the LoRA adapters, which a full "
            "model has no place for (openpi's loader keeps only the keys the target model has, so the warm start "
            "would silently train from the base weights). Continue with preset=lora from it, or start the full "
            "fine-tune from the base checkpoint (pretrained_uri=base)"
        )
    parent_model = manifest.params.get("model", "pi0")
    if parent_model != params.model:
        raise TrainError(
            f"pretrained_uri {uri} holds {parent_model} weights, which do not load into a {params.model} "
            f"model: warm-start from a {params.model} checkpoint, or set model={parent_model}"
        )
    return checkpoint_ref(manifest.uri, step if step != final_step(manifest) else None), manifest


def check_weights_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A gs:// checkpoint that is neither in openpi's cache nor reachable fails in seconds, not after a hang."""
    if not uri.startswith("gs://"):
        return
    import urllib.parse

    from openpi.shared import download

    parsed = urllib.parse.urlparse(uri)
    cached = download.get_cache_dir() / parsed.netloc / parsed.path.strip("/")
    if cached.exists():
        return
    if (e := unreachable(GCS_HOST, timeout_s=timeout_s)) is not None:
        raise TrainError(
            f"pretrained weights {uri} are not in openpi's cache ({cached}) and {GCS_HOST} is unreachable "
            f"({e}). Copy the params directory there (or to s3:// and set pretrained_uri to the copy)"
        ) from e


# Run in a child process with the cache directory: a sampler that draws in a loop (what pi0's flow-matching time,
# Beta(1.5, 1), uses) compiled fresh, then the same executable loaded back from the persistent cache.
_CACHE_SELF_CHECK = """
import os, random, sys
import jax, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
salt = random.random()  # a program no earlier process compiled: the first call compiles, it does not load
f = lambda k: jax.random.beta(k, 1.5, 1.0, (16,)) + salt
fresh = np.asarray(jax.jit(f)(jax.random.key(0)))
jax.clear_caches()
cached = np.asarray(jax.jit(f)(jax.random.key(0)))
print("ok" if np.array_equal(fresh, cached) else "mismatch")
"""


_CACHE_CHECKED: dict[str, bool] = {}  # cache dir -> verdict, so a process checks each backend once


def enable_compilation_cache(cache_dir: Path) -> bool:
    """JAX's persistent compilation cache, only where executables loaded from it compute what fresh ones do.

    With JAX 0.5.3 on the CPU they do not: an executable loaded from the cache returns one constant from
    `jax.random.gamma`/`beta` (seen here: Beta(1.5, 1) gave 0.636 for every sample), so pi0 would silently be
    trained at a single flow-matching time. openpi's train.py enables the cache unconditionally. We check the
    backend once per process in a child process (~3 s) and leave the cache off where the check fails.
    """
    import subprocess
    import sys

    import jax

    if str(cache_dir) in _CACHE_CHECKED:
        return _CACHE_CHECKED[str(cache_dir)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # the check must not take the GPU's memory
    try:
        out = (
            subprocess.run(
                [sys.executable, "-c", _CACHE_SELF_CHECK, str(cache_dir)],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            .stdout.strip()
            .splitlines()
        )
        ok = bool(out) and out[-1] == "ok"
    except subprocess.TimeoutExpired:
        ok = False
    if ok:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        log.info(f"[train] JAX compilation cache: {cache_dir}")
    else:
        log.info(
            f"[train] JAX compilation cache left off: executables loaded from it on this backend "
            f"({jax.default_backend()}) do not reproduce random sampling (a JAX bug); every attempt compiles afresh"
        )
    _CACHE_CHECKED[str(cache_dir)] = ok
    return ok


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


class _Loop:
    """openpi's training step on its own parts, jit-compiled once; the state lives on the default device."""

    def __init__(self, config):
        import jax
        from openpi.training import sharding

        self.config = config
        self.mesh = sharding.make_mesh(config.fsdp_devices)
        self.data_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(sharding.DATA_AXIS))
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def init_state(self, rng, *, for_restore: bool):
        import flax.nnx as nnx
        import flax.traverse_util as traverse_util
        import jax
        import jax.numpy as jnp
        from openpi.shared import array_typing as at
        from openpi.shared import nnx_utils
        from openpi.training import optimizer as _optimizer
        from openpi.training import sharding
        from openpi.training import utils as training_utils

        config = self.config
        tx = _optimizer.create_optimizer(config.optimizer, config.lr_schedule, weight_decay_mask=None)

        def init(rng, loaded=None):
            model = config.model.create(rng)
            if loaded is not None:
                graphdef, state = nnx.split(model)
                state.replace_by_pure_dict(loaded)  # fails loudly if the weights do not fit the model
                model = nnx.merge(graphdef, state)
            params = nnx.state(model)
            # Frozen weights are stored in bfloat16 and get no optimizer state: that is what makes LoRA fit.
            params = nnx_utils.state_map(
                params, config.freeze_filter, lambda p: p.replace(p.value.astype(jnp.bfloat16))
            )
            return training_utils.TrainState(
                step=0,
                params=params,
                model_def=nnx.graphdef(model),
                tx=tx,
                opt_state=tx.init(params.filter(config.trainable_filter)),
                ema_decay=config.ema_decay,
                ema_params=None if config.ema_decay is None else params,
            )

        shape = jax.eval_shape(init, rng)
        self.state_sharding = sharding.fsdp_sharding(shape, self.mesh, log=False)
        if for_restore:
            return shape
        expected = shape.params.to_pure_dict()
        loaded = config.weight_loader.load(expected)
        at.check_pytree_equality(expected=expected, got=loaded, check_shapes=True, check_dtypes=True)
        # Keep only what the loader filled in (a from-scratch run loads nothing); the rest keeps its initialisation.
        flat = traverse_util.flatten_dict(loaded)
        filled = {k: v for k, v in flat.items() if not isinstance(v, jax.ShapeDtypeStruct)}
        self.weights_loaded = weights_loaded_report(flat, filled)
        loaded = traverse_util.unflatten_dict(filled)
        return jax.jit(init, donate_argnums=(1,), in_shardings=self.replicated, out_shardings=self.state_sharding)(
            rng, loaded
        )

    weights_loaded: dict | None = None  # what init_state took from the initial weights (None: restored or not run)

    def compile_step(self):
        import jax

        return jax.jit(
            functools.partial(_train_step, self.config),
            in_shardings=(self.replicated, self.state_sharding, self.data_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=(1,),
        )

    def compile_probe(self):
        import jax

        probe = jax.jit(
            _probe_loss,
            in_shardings=(self.state_sharding, self.data_sharding, self.replicated),
            out_shardings=self.replicated,
        )
        return lambda state, batch: probe(state, batch, jax.random.key(0))


def weights_loaded_report(expected: dict, filled: dict) -> dict:
    """What the initial weights gave the model: parameter arrays and values loaded, and those left at their random
    initialisation (LoRA adapters on a base checkpoint; everything when training from scratch)."""
    import numpy as np

    def size(v) -> int:
        return int(np.prod(v.shape))

    initialised = sorted("/".join(map(str, k)) for k in expected if k not in filled)
    return {
        "arrays_loaded": len(filled),
        "values_loaded": sum(size(v) for v in filled.values()),
        "arrays_initialised": len(initialised),
        "values_initialised": sum(size(v) for k, v in expected.items() if k not in filled),
        "initialised_examples": initialised[:5],
    }


def _probe_loss(state, batch, rng):
    """The loss of the weights a checkpoint would hold (EMA when on), deterministic: fixed noise, no augmentation."""
    import flax.nnx as nnx
    import jax.numpy as jnp

    params = state.ema_params if state.ema_params is not None else state.params
    model = nnx.merge(state.model_def, params)
    model.eval()
    observation, actions = batch
    return jnp.mean(model.compute_loss(rng, observation, actions, train=False))


def _train_step(config, rng, state, batch):
    import dataclasses as dc

    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp
    import optax
    from openpi.shared import nnx_utils

    model = nnx.merge(state.model_def, state.params)
    model.train()
    observation, actions = batch

    def loss_fn(model, rng, observation, actions):
        return jnp.mean(model.compute_loss(rng, observation, actions, train=True))

    step_rng = jax.random.fold_in(rng, state.step)
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, config.trainable_filter))(
        model, step_rng, observation, actions
    )
    trainable = state.params.filter(config.trainable_filter)
    updates, opt_state = state.tx.update(grads, state.opt_state, trainable)
    nnx.update(model, optax.apply_updates(trainable, updates))
    params = nnx.state(model)
    new_state = dc.replace(state, step=state.step + 1, params=params, opt_state=opt_state)
    if state.ema_decay is not None:
        new_state = dc.replace(
            new_state,
            ema_params=jax.tree.map(
                lambda old, new: state.ema_decay * old + (1 - state.ema_decay) * new, state.ema_params, params
            ),
        )
    # openpi's train_step reports the norm of the weight matrices too (not biases, scales or embeddings): a run whose
    # weights grow or collapse shows there before the loss says so.
    kernels = nnx.state(
        model,
        nnx.All(
            nnx.Param,
            nnx.Not(nnx_utils.PathRegex(".*/(bias|scale|pos_embedding|input_embedding)")),
            lambda _, x: x.value.ndim > 1,
        ),
    )
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(kernels)}


def camera_views(batch, count: int = 5) -> list:
    """The first `count` samples of a batch as W&B images, each one row of its camera slots (openpi's train.py logs
    the same at step 0): the inputs after every transform, so a wrong camera, crop or colour order shows."""
    import numpy as np
    import wandb

    observation, _ = batch
    slots = [np.asarray(img) for img in observation.images.values()]
    views = []
    for i in range(min(count, len(slots[0]))):
        row = np.concatenate([slot[i] for slot in slots], axis=1)  # [-1, 1] floats, as the model takes them
        views.append(wandb.Image(np.clip((row + 1) * 127.5, 0, 255).astype(np.uint8)))
    return views


def _init_wandb(params: TrainParams, config, run_dir: Path, resume_id: str | None):
    import wandb

    if not params.wandb:
        return None
    mode = os.environ.get("WANDB_MODE", "offline")
    run = wandb.init(
        project=params.wandb_project,
        name=f"{params.env_id}-{params.preset}",
        dir=str(run_dir),
        mode=mode,
        id=resume_id,
        resume="allow" if resume_id else None,
        config={"env_id": params.env_id, **params.key_params(), "config_name": config.name},
    )
    return run


def openpi_train_config(
    params: TrainParams,
    *,
    repo_id: str = "maniskill/unset",
    assets_dir: Path | None = None,
    checkpoint_base_dir: Path = Path("./checkpoints"),
    weights_path: str | None = None,
    frames: int | None = None,
):
    """The openpi TrainConfig these params train with: the preset's defaults where the params leave 0.

    `weights_path`: the local or remote params directory the initial weights load from (default: the params'
    pretrained_uri as given, for inspection; training passes the resolved one). `frames`: the training set's size,
    which the default run length of lora/full follows (`TrainParams.resolved_steps`).
    """
    from tasks.policy.configs import for_task

    return for_task(
        params.env_id,
        params.preset,
        model=params.model,
        repo_id=repo_id,
        assets_dir=assets_dir,
        checkpoint_base_dir=checkpoint_base_dir,
        exp_name="run",
        action_horizon=params.action_horizon,
        batch_size=params.batch_size or None,
        num_train_steps=params.resolved_steps(frames),
        peak_lr=params.learning_rate or None,
        pretrained_uri=params.weights_uri() if weights_path is None else weights_path,
        seed=params.seed,
        save_interval=params.save_interval or 10**9,
        log_interval=params.log_interval,
        num_workers=params.num_workers,
        wandb_enabled=params.wandb,
        wandb_project=params.wandb_project,
        fsdp_devices=params.fsdp_devices,
    )


def held_out_batches(config, params: TrainParams, holdout_dir: Path, holdout_key: str, sharding) -> list:
    """`val_batches` batches of the held-out dataset, drawn once (fixed seed) through openpi's own loader and
    transforms with the training norm stats, so the validation loss is computed exactly like the training loss."""
    from openpi.training import data_loader as _data_loader

    from tasks.core.dataset import repo_id_for

    frames = json.loads((holdout_dir / "meta" / "info.json").read_text())["total_frames"]
    if frames < config.batch_size:
        raise TrainError(
            f"the held-out dataset has {frames} frames, fewer than the batch size {config.batch_size}: "
            "hold out more demos (holdout_count) or set val_interval=0 to train without validation loss"
        )
    repo_id = repo_id_for(params.env_id, holdout_key)
    link_dataset(holdout_dir, repo_id)
    val_config = dataclasses.replace(config, num_workers=0, data=dataclasses.replace(config.data, repo_id=repo_id))
    loader = _data_loader.create_data_loader(
        val_config, sharding=sharding, shuffle=True, num_batches=params.val_batches
    )
    return list(loader)


@dataclasses.dataclass
class TrainingSetup:
    """What a run trains with, checked and resolved before any device work (`prepare`)."""

    config: Any  # openpi's TrainConfig
    frames: int  # training frames (the data-sized default steps follow them)
    keep_period: int  # resolved: the steps whose checkpoints the artifact keeps as candidates
    repo_id: str  # the dataset's name under HF_LEROBOT_HOME, as openpi's loader opens it
    init: str  # how the weights start, in words


@dataclasses.dataclass
class ResumePoint:
    """The newest complete resume point an earlier attempt left (`restore_resume_point`); step 0: none."""

    step: int
    markers: dict[str, dict[str, Any]]  # every complete resume point: step (as a string) -> its marker

    @property
    def wandb_id(self) -> str | None:
        return self.markers.get(str(self.step), {}).get("wandb_id")


def run_training(
    params: TrainParams,
    *,
    dataset_dir: Path,
    dataset_key: str,
    stats_dir: Path,
    out: Path,
    store: ArtifactStore,
    progress_uri: str,
    init_weights: str = "",
    init_params_dir: Path | None = None,
    holdout_dir: Path | None = None,
    holdout_key: str = "",
) -> dict[str, Any]:
    """Trains into `out/` (checkpoint, log, summary), resuming from `progress_uri` when a checkpoint is there.

    `holdout_dir`: the held-out dataset; with `val_interval`, its loss is logged every `val_interval` steps and at
    the end (`{"step", "val_loss"}` records in train_log.jsonl, the task log and W&B).

    `init_weights`: the resolved initial weights (URI, for the record); `init_params_dir`: their local params
    directory when they came from a train artifact (otherwise openpi's loader fetches `init_weights` itself).
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(params.xla_mem_fraction))
    setup = prepare(params, dataset_dir, dataset_key, stats_dir, out.parent, init_weights, init_params_dir)
    resume = restore_resume_point(params, setup, store, progress_uri)
    run = TrainingRun(params, setup, resume, out, holdout_dir, holdout_key)
    with ResumePoints(
        store, progress_uri, candidate_steps(params, setup.config.num_train_steps), background=not params.upload_inline
    ) as resume_points:
        run.train(resume_points)
    run.finish(store, progress_uri)
    summary = run.summary(init_weights, resume_points)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def prepare(
    params: TrainParams,
    dataset_dir: Path,
    dataset_key: str,
    stats_dir: Path,
    scratch: Path,
    init_weights: str,
    init_params_dir: Path | None,
) -> TrainingSetup:
    """Checks the inputs and the devices, and resolves openpi's TrainConfig (norm stats as its assets, the dataset
    linked where openpi's loader looks for it), before any device work."""
    import jax

    from tasks.core.dataset import repo_id_for
    from tasks.policy.tokenizer import ensure_tokenizer

    spec = get_spec(params.env_id)
    check_norm_stats(spec, stats_dir, MODEL_ACTION_DIM, quantile=params.model != "pi0")
    check_weights_reachable(init_weights)
    ensure_tokenizer()
    assets = scratch / "assets"
    (assets / spec.env_id).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stats_dir / "norm_stats.json", assets / spec.env_id / "norm_stats.json")
    repo_id = repo_id_for(spec.env_id, dataset_key)
    link_dataset(dataset_dir, repo_id)
    frames = json.loads((Path(dataset_dir) / "meta" / "info.json").read_text())["total_frames"]
    config = openpi_train_config(
        params,
        repo_id=repo_id,
        assets_dir=assets,
        checkpoint_base_dir=scratch / "checkpoints",
        weights_path=str(init_params_dir) if init_params_dir else init_weights.removeprefix("file://"),
        frames=frames,
    )
    if jax.device_count() % config.fsdp_devices:
        raise TrainError(
            f"fsdp_devices={config.fsdp_devices} does not divide the {jax.device_count()} devices this worker "
            "sees: use a divisor of it (1 shards nothing), or give the worker more GPUs"
        )
    if config.batch_size % jax.device_count():
        raise TrainError(f"batch_size {config.batch_size} is not divisible by the {jax.device_count()} devices")
    check_backend(params, jax.default_backend())
    log.info(
        f"[train] JAX backend {jax.default_backend()}: {jax.device_count()} device(s), "
        f"{', '.join(sorted({d.device_kind for d in jax.devices()}))}"
    )
    setup = TrainingSetup(
        config=config,
        frames=frames,
        keep_period=params.resolved_keep_period(config.num_train_steps),
        repo_id=repo_id,
        init=init_description(init_weights, from_artifact=init_params_dir is not None),
    )
    log.info(
        f"[train] {config.name}: {setup.init}; {config.num_train_steps} steps at batch {config.batch_size} "
        f"({params.steps_source(frames)}; {config.num_train_steps * config.batch_size / frames:.1f} epochs of "
        f"{frames} frames), checkpoints kept every {setup.keep_period or '-'} steps"
    )
    enable_compilation_cache(Path(os.environ.get("PIPELINE_JAX_CACHE", Path.home() / ".cache" / "jax")))
    return setup


def restore_resume_point(
    params: TrainParams, setup: TrainingSetup, store: ArtifactStore, progress_uri: str
) -> ResumePoint:
    """The newest complete resume point of an earlier attempt, downloaded where orbax restores from."""
    done = store.complete_trees(progress_uri)
    step = max((int(name) for name in done if name.isdigit()), default=0)
    if step:
        store.get_tree(f"{progress_uri}/{step}", setup.config.checkpoint_dir / str(step))
        # Renew the resume point's time: the maintenance sweep ages resume points by it, and a training resumed from
        # an old checkpoint must not lose it before its next save.
        store.write_json(f"{progress_uri}/{step}/{COMPLETE}", {**done[str(step)], "saved_at": time.time()})
        log.info(f"[train] resuming from the checkpoint at step {step} ({progress_uri}/{step})")
    # The candidates an earlier attempt kept come back from their resume points at the end: check now that they
    # still exist, rather than after hours of training.
    lost = [s for s in candidate_steps(params, setup.config.num_train_steps) if s <= step and str(s) not in done]
    if lost:
        raise TrainError(
            f"the kept checkpoints of steps {lost} were lost with an earlier attempt (their resume points "
            f"under {progress_uri} are gone): rerun with keep_period=0, or delete {progress_uri} to train "
            "again from the start"
        )
    return ResumePoint(step=step, markers=done)


class TrainingRun:
    """One attempt at a training run: the state on the device, the data, the jitted step and probe, the logs.

    Built (`__init__`) from the setup and the resume point, then `train` (the loop: steps, logs, validation, saves),
    `finish` (the final checkpoint and the kept ones into the artifact) and `summary`.
    """

    def __init__(
        self,
        params: TrainParams,
        setup: TrainingSetup,
        resume: ResumePoint,
        out: Path,
        holdout_dir: Path | None,
        holdout_key: str,
    ):
        import jax
        from openpi.training import checkpoints as _checkpoints
        from openpi.training import data_loader as _data_loader

        self.params, self.setup, self.resume, self.out = params, setup, resume, out
        config = self.config = setup.config
        self.ckpt_dir = config.checkpoint_dir
        self.manager, resuming = _checkpoints.initialize_checkpoint_dir(
            self.ckpt_dir, keep_period=None, overwrite=False, resume=True
        )
        self.loop = _Loop(config)
        self.data_loader = _data_loader.create_data_loader(config, sharding=self.loop.data_sharding, shuffle=True)
        self.batches = iter(self.data_loader)
        init_rng, self.train_rng = jax.random.split(jax.random.key(config.seed))
        self.state = self.loop.init_state(init_rng, for_restore=resuming)
        if resuming:
            self.state = _checkpoints.restore_state(self.manager, self.state, self.data_loader)
        elif (w := self.loop.weights_loaded) is not None:
            log.info(
                f"[train] initial weights: {w['arrays_loaded']} arrays ({w['values_loaded'] / 1e6:.1f} M values) "
                f"loaded, {w['arrays_initialised']} ({w['values_initialised'] / 1e6:.1f} M) randomly initialised"
                + (f", e.g. {', '.join(w['initialised_examples'][:3])}" if w["arrays_initialised"] else "")
            )
        # Inside the artifact: an offline run is published with the checkpoint and can be `wandb sync`ed later.
        self.wandb_run = _init_wandb(params, config, out, resume.wandb_id)
        self.step_fn = self.loop.compile_step()
        self.probe_fn = self.loop.compile_probe()
        self.log_path = out / "train_log.jsonl"
        earlier = self.ckpt_dir / str(resume.step) / "train_log.jsonl"
        if resume.step and earlier.is_file():
            shutil.copyfile(earlier, self.log_path)  # keep the curve of earlier attempts
        self.batch = next(self.batches)
        if self.wandb_run is not None and not resume.step:
            self.wandb_run.log({"camera_views": camera_views(self.batch)}, step=0)  # as openpi logs them
        # The probe: the loss of the current weights on the first batch with a fixed noise draw and no augmentation.
        # Same seed, same data -> same first batch, so a warm start's initial probe equals its parent's final probe.
        self.probe_batch = self.batch
        self.init_probe = self.probe(self.probe_batch)
        log.info(f"[train] probe loss of the initial weights: {self.init_probe:.4f}")
        self.final_probe: float | None = None
        self.val_batches = (
            held_out_batches(config, params, holdout_dir, holdout_key, self.loop.data_sharding)
            if holdout_dir is not None and params.val_interval
            else []
        )
        self.intervals: list[tuple[int, float]] = []  # (steps, seconds) per log interval
        self.pending: list[tuple[int, Any]] = []  # (step, metrics still on the device)
        self.save_blocking: list[float] = []  # per save: the seconds the loop stood still for it
        self.t_mark = time.monotonic()

    def probe(self, batch) -> float:
        import jax
        from openpi.training import sharding

        with sharding.set_mesh(self.loop.mesh):
            return float(jax.device_get(self.probe_fn(self.state, batch)))

    def train(self, resume_points: ResumePoints) -> None:
        """The loop: a step, the next batch fetched while it runs, and at their intervals logs, validation, saves."""
        from openpi.training import sharding

        config, params, keep_period = self.config, self.params, self.setup.keep_period
        with open(self.log_path, "a") as log_file:
            for step in range(int(self.state.step), config.num_train_steps):
                with sharding.set_mesh(self.loop.mesh):
                    self.state, info = self.step_fn(self.train_rng, self.state, self.batch)
                self.pending.append((step + 1, info))
                last_step = step + 1 == config.num_train_steps
                if not last_step:
                    self.batch = next(self.batches)  # the step runs on the device meanwhile (JAX is asynchronous)
                kept = bool(keep_period) and (step + 1) % keep_period == 0 and not last_step
                save = (step + 1) % config.save_interval == 0 or last_step or kept
                if (step + 1) % config.log_interval == 0 or save:
                    self.flush(log_file)
                if self.val_batches and ((step + 1) % params.val_interval == 0 or last_step):
                    self.validate(step + 1, log_file)
                    self.t_mark = time.monotonic()  # validation time is not step time
                if save:
                    self.save(step + 1, kept, resume_points)
                    self.t_mark = time.monotonic()  # the save's blocking time is counted apart (save_blocking_s)

    def flush(self, log_file) -> None:
        """Brings the pending steps' metrics to the host (the only device sync between checkpoints) and logs them."""
        import jax
        import numpy as np

        host = jax.device_get([info for _, info in self.pending])
        now = time.monotonic()
        dt = (now - self.t_mark) / len(self.pending)
        self.intervals.append((len(self.pending), now - self.t_mark))
        self.t_mark = now
        records = []
        for (step, _), info in zip(self.pending, host):
            record = {
                "step": step,
                "loss": float(info["loss"]),
                "grad_norm": float(info["grad_norm"]),
                "param_norm": round(float(info["param_norm"]), 4),
                "step_time_s": round(dt, 4),
            }
            if not np.isfinite(record["loss"]):
                raise RuntimeError(
                    f"loss is {record['loss']} at step {step}: lower the learning rate or check the data"
                )
            log_file.write(json.dumps(record) + "\n")
            records.append(record)
        log_file.flush()
        last, total = records[-1], self.config.num_train_steps
        log.info(
            f"[train] step {last['step']}/{total} loss={last['loss']:.4f} grad_norm={last['grad_norm']:.3f} "
            f"step_time={dt:.3f}s ETA {format_eta((total - last['step']) * dt)}"
        )
        if self.wandb_run is not None:
            for r in records:
                self.wandb_run.log(
                    {k: r[k] for k in ("loss", "grad_norm", "param_norm", "step_time_s")}, step=r["step"]
                )
        self.pending.clear()

    def validate(self, step: int, log_file) -> None:
        """The held-out loss of the current weights (EMA when on): same batches, same noise, no augmentation."""
        import numpy as np

        value = float(np.mean([self.probe(b) for b in self.val_batches]))
        if not np.isfinite(value):
            raise RuntimeError(
                f"held-out validation loss is {value} at step {step}: lower the learning rate or check the data"
            )
        log_file.write(json.dumps({"step": step, "val_loss": round(value, 6)}) + "\n")
        log_file.flush()
        log.info(f"[train] step {step}/{self.config.num_train_steps} held-out validation loss={value:.4f}")
        if self.wandb_run is not None:
            self.wandb_run.log({"val_loss": value}, step=step)

    def save(self, step: int, kept: bool, resume_points: ResumePoints) -> None:
        """orbax's asynchronous save (the device-to-host copy blocks, the write does not), handed to the uploader."""
        from openpi.training import checkpoints as _checkpoints

        t0 = time.monotonic()
        resume_points.wait()  # at most one upload in flight: this save lets orbax delete the previous checkpoint
        _checkpoints.save_state(self.manager, self.state, self.data_loader, step)
        log_snapshot = self.out.parent / "log-at-save.jsonl"
        shutil.copyfile(self.log_path, log_snapshot)  # the curve up to this step, stored with the checkpoint

        def finished() -> Path:  # in the upload thread
            self.manager.wait_until_finished()
            saved = self.ckpt_dir / str(step)
            shutil.move(log_snapshot, saved / "train_log.jsonl")
            if kept:
                keep_candidate(saved, self.out, step)
            log.info(f"[train] checkpoint at step {step} written ({dir_size_mb(saved):.0f} MB)")
            return saved

        wandb_id = self.wandb_run.id if self.wandb_run is not None else None
        # saved_at: the maintenance sweep ages resume points by it
        resume_points.submit(step, finished, {"step": step, "wandb_id": wandb_id, "saved_at": time.time()})
        self.save_blocking.append(time.monotonic() - t0)

    def finish(self, store: ArtifactStore, progress_uri: str) -> None:
        """The final probe; the final checkpoint and every kept one into the artifact (the ones kept before an earlier
        attempt died come from its resume points, checked when it resumed)."""
        self.final_probe = self.probe(self.probe_batch)
        log.info(f"[train] probe loss of the final weights: {self.final_probe:.4f} (initial {self.init_probe:.4f})")
        if self.wandb_run is not None:
            self.wandb_run.summary.update({"probe_loss_initial": self.init_probe, "probe_loss_final": self.final_probe})
            self.wandb_run.finish()
        final = self.ckpt_dir / str(self.config.num_train_steps)
        shutil.copytree(final, self.out / "checkpoint", ignore=shutil.ignore_patterns("train_log.jsonl"))
        scratch = self.out.parent
        for s in candidate_steps(self.params, self.config.num_train_steps):
            if not (self.out / CANDIDATES / str(s)).is_dir():
                restored = store.get_tree(f"{progress_uri}/{s}", scratch / "kept" / str(s), skip=("train_state",))
                keep_candidate(restored, self.out, s)
                shutil.rmtree(restored)

    def summary(self, init_weights: str, resume_points: ResumePoints) -> dict[str, Any]:
        """train_summary.json: what was trained, how, how fast, and what it cost (also the artifact's metrics)."""
        import jax
        import numpy as np

        from tasks.policy.configs import uses_quantile_norm
        from tasks.policy.tiny_model import vision_variant

        config, params, setup = self.config, self.params, self.setup
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        records = [r for r in lines if "loss" in r]
        val_records = [r for r in lines if "val_loss" in r]
        # The first interval of an attempt includes jit compilation: throughput is measured after it.
        intervals = self.intervals
        steady = intervals[1:]
        steady_steps, steady_s = sum(n for n, _ in steady), sum(s for _, s in steady)
        candidates = candidate_steps(params, config.num_train_steps)
        return {
            "config_name": config.name,
            "model": params.model,
            "preset": params.preset,
            "normalization": "quantile (q01/q99)" if uses_quantile_norm(config.model) else "z-score (mean/std)",
            "steps": config.num_train_steps,
            "steps_source": params.steps_source(setup.frames),
            "train_frames": setup.frames,
            "epochs": round(config.num_train_steps * config.batch_size / setup.frames, 2),
            "batch_size": config.batch_size,
            "action_horizon": params.action_horizon,
            "learning_rate": config.lr_schedule.peak_lr,
            "warmup_steps": config.lr_schedule.warmup_steps,
            "decay_steps": config.lr_schedule.decay_steps,
            "decay_lr": config.lr_schedule.decay_lr,
            "vision_tower": vision_variant(config.model),
            "ema_decay": config.ema_decay,
            "init": setup.init,
            "from_scratch": not init_weights,
            "init_weights": init_weights or None,
            "resumed_from_step": self.resume.step,
            # What the initial weights filled in (None when this attempt resumed: its weights came from the checkpoint).
            "weights_loaded": self.loop.weights_loaded,
            "final_loss": records[-1]["loss"] if records else None,
            "probe_loss_initial": round(self.init_probe, 6),
            "probe_loss_final": round(self.final_probe, 6) if self.final_probe is not None else None,
            "val_loss_final": val_records[-1]["val_loss"] if val_records else None,
            "val_loss_best": min(r["val_loss"] for r in val_records) if val_records else None,
            "val_loss_best_step": min(val_records, key=lambda r: r["val_loss"])["step"] if val_records else None,
            "val_frames": len(self.val_batches) * config.batch_size if self.val_batches else 0,
            "first_interval_s": round(intervals[0][1], 3) if intervals else None,
            "steps_per_second": round(steady_steps / steady_s, 3) if steady_s > 0 else None,
            "median_step_s": round(float(np.median([s / n for n, s in steady] or [s / n for n, s in intervals])), 4)
            if intervals
            else None,
            "peak_rss_mb": round(peak_rss_mb()),
            # What saving cost the loop: the median seconds it stood still per save, and the total time it waited for
            # an earlier upload to finish (the part of the uploads that was not hidden behind training steps).
            "save_blocking_s": round(float(np.median(self.save_blocking)), 3) if self.save_blocking else None,
            "upload_wait_s": round(resume_points.waited_s, 3),
            "resume_point_uploads": resume_points.uploaded,
            "upload_inline": params.upload_inline,
            "checkpoint_mb": round(dir_size_mb(self.out / "checkpoint"), 1),
            "keep_period": setup.keep_period,
            "checkpoint_steps": [*candidates, config.num_train_steps],
            "device": jax.devices()[0].device_kind,
            "dataset_repo_id": setup.repo_id,
        }


def keep_candidate(saved: Path, out: Path, step: int) -> None:
    """A checkpoint as verify and openpi's policy loader read it: params and assets, not the optimizer state."""
    shutil.copytree(
        saved,
        out / CANDIDATES / str(step),
        ignore=shutil.ignore_patterns("train_state", "train_log.jsonl"),
        dirs_exist_ok=True,
    )


def check_backend(params: TrainParams, backend: str) -> None:
    """lora and full on a CPU backend: a GPU worker whose JAX fell back to the CPU (no CUDA wheel, no device)."""
    if params.preset != "tiny" and backend == "cpu" and not params.allow_cpu:
        raise TrainError(
            f"preset {params.preset} would train on JAX's CPU backend: this worker's JAX sees no GPU (check "
            "`python -c 'import jax; print(jax.devices())'` on the worker: the CUDA jaxlib and the NVIDIA runtime must "
            "be there), and a real-size step takes minutes on a CPU. Run it on the gpu queue's worker, or set "
            "allow_cpu=true if a CPU run is really meant"
        )


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def init_description(init_weights: str, from_artifact: bool) -> str:
    """How the run's weights start, in words (the metrics and the report carry it)."""
    if not init_weights:
        return "from scratch (random initialisation)"
    return f"warm start from {init_weights}" if from_artifact else f"pretrained weights {init_weights}"


def train(params: TrainParams, root: str, dataset: str, stats: str, holdout: str | None = None) -> StageResult:
    params.validate()
    from tasks.policy.tokenizer import is_offline_stand_in

    if params.preset != "tiny" and is_offline_stand_in():
        raise TrainError(
            "openpi's tokenizer cache holds the offline stand-in tokenizer, whose token ids mean nothing to pretrained "
            f"pi0 weights: preset {params.preset} needs the real PaliGemma tokenizer. Point OPENPI_DATA_HOME at a cache "
            "with big_vision/paligemma_tokenizer.model (openpi fetches it when online)"
        )
    store = ArtifactStore(root)
    parents: list[Manifest] = [
        require(store, dataset, stage="convert", env_id=params.env_id, what="dataset"),
        require(store, stats, stage="stats", env_id=params.env_id, what="stats"),
    ]
    holdout_manifest = None
    if holdout:
        holdout_manifest = require(store, holdout, stage="convert", env_id=params.env_id, what="holdout")
        if holdout_manifest.uri == parents[0].uri:
            raise TrainError(
                f"holdout {holdout} is the training dataset itself: a validation loss on it measures nothing"
            )
        parents.append(holdout_manifest)
    elif params.val_interval:
        raise TrainError(
            "val_interval is set but no held-out dataset was given (--holdout): pass the held-out convert "
            "artifact, or set val_interval=0"
        )
    init_weights, init_manifest = resolve_initial_weights(params, store)
    if init_manifest is not None:
        parents.append(init_manifest)
    key_params = {**params.key_params(), "pretrained_uri": init_weights, "spec": get_spec(params.env_id).digest(STAGE)}
    progress_uri = artifact_uri(store, params.env_id, PROGRESS_STAGE, CODE_VERSION, key_params, parents)

    def build(out: Path) -> dict:
        cache = out.parent / "inputs"
        dataset_manifest, dataset_dir = store.fetch(dataset, cache)
        _, stats_dir = store.fetch(stats, cache)
        init_dir = None
        if init_manifest is not None:
            folder = checkpoint_dir_name(init_manifest, split_checkpoint_ref(init_weights)[1])
            init_dir = store.fetch(init_manifest.uri, cache, only=[f"{folder}/params"])[1] / folder / "params"
        holdout_dir = store.fetch(holdout, cache)[1] if holdout_manifest is not None else None
        return run_training(
            params,
            dataset_dir=dataset_dir,
            dataset_key=dataset_manifest.key,
            stats_dir=stats_dir,
            out=out,
            store=store,
            progress_uri=progress_uri,
            init_weights=init_weights,
            init_params_dir=init_dir,
            holdout_dir=holdout_dir,
            holdout_key=holdout_manifest.key if holdout_manifest is not None else "",
        )

    result = run_stage(
        store,
        env_id=params.env_id,
        stage=STAGE,
        code_version=CODE_VERSION,
        params=key_params,
        parents=parents,
        build=build,
    )
    store.delete_tree(progress_uri)  # the published artifact supersedes the resume points
    return result


logging.getLogger("absl").setLevel(logging.WARNING)
main = cli.cli(__doc__, TrainParams, train, inputs={"dataset": False, "stats": False, "holdout": "optional"})

if __name__ == "__main__":
    raise SystemExit(main())
