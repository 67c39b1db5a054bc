"""P6: training throughput, our train stage vs a loop in the style of openpi's `scripts/train.py`.

Same tiny config (tasks/policy/configs.py), same dataset and norm stats, same batch size, steps, log interval
and seed, one after the other in this process. openpi's script (not in the `rpent-openpi` wheel) builds the
train state, jits `train_step`, then per step: run the step, append its info, every `log_interval` steps
bring the stacked infos to the host, fetch the next batch, save a checkpoint at the end. Both sides are
timed in steady state: after their first sync, which includes jit compilation. Goal: ours >= 1.0x.
Usage: python -m bench.bench_train [steps] [log_interval]
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from bench.common import ENV_ID, OUT, report, store_root

BATCH = 1


def prepared_inputs(demo_count: int = 3):
    """A rendered, converted dataset with norm stats in the bench store (cache hits after the first run)."""
    from bench.common import rendered
    from tasks.convert import ConvertParams, convert
    from tasks.stats import StatsParams, stats

    root = store_root("store")
    r = rendered(demo_count)
    dataset = convert(ConvertParams(env_id=ENV_ID), root=root, rendered=[r.uri])
    norm = stats(StatsParams(env_id=ENV_ID), root=root, dataset=dataset.uri)
    return root, dataset, norm


def openpi_style_loop(params, dataset, norm, work) -> dict:
    """The loop of openpi's scripts/train.py on openpi's parts (data loader, train state, checkpoints)."""
    import jax
    import jax.numpy as jnp
    from flax.training import common_utils
    from openpi.training import checkpoints as _checkpoints
    from openpi.training import data_loader as _data_loader
    from openpi.training import sharding

    from tasks.core.dataset import repo_id_for
    from tasks.core.store import ArtifactStore
    from tasks.train import _Loop, link_dataset, openpi_train_config

    store = ArtifactStore(store_root("store"))
    manifest, dataset_dir = store.fetch(dataset.uri, work / "inputs")
    _, stats_dir = store.fetch(norm.uri, work / "inputs")
    assets = work / "assets" / ENV_ID
    assets.mkdir(parents=True)
    shutil.copyfile(stats_dir / "norm_stats.json", assets / "norm_stats.json")
    repo_id = repo_id_for(ENV_ID, manifest.key)
    link_dataset(dataset_dir, repo_id)
    config = openpi_train_config(params, repo_id=repo_id, assets_dir=work / "assets", checkpoint_base_dir=work / "ckpt")
    loop = _Loop(
        config
    )  # openpi's init_train_state: model.create, weight loader, freeze filter, optimizer, fsdp sharding
    data_loader = _data_loader.create_data_loader(config, sharding=loop.data_sharding, shuffle=True)
    data_iter = iter(data_loader)
    batch = next(data_iter)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    state = loop.init_state(init_rng, for_restore=False)
    jax.block_until_ready(state)
    manager, _ = _checkpoints.initialize_checkpoint_dir(
        config.checkpoint_dir, keep_period=None, overwrite=True, resume=False
    )
    ptrain_step = loop.compile_step()
    infos, t0 = [], None
    for step in range(config.num_train_steps):
        with sharding.set_mesh(loop.mesh):
            state, info = ptrain_step(train_rng, state, batch)
        infos.append(info)
        if step % config.log_interval == 0:
            stacked = common_utils.stack_forest(infos)
            jax.device_get(jax.tree.map(jnp.mean, stacked))
            infos = []
            if t0 is None:
                t0 = time.monotonic()  # steady state starts after the first sync (jit compilation)
        batch = next(data_iter)
        if step == config.num_train_steps - 1:
            jax.device_get(infos)
            t_end = time.monotonic()
            _checkpoints.save_state(manager, state, data_loader, step)
            manager.wait_until_finished()
    return {"steady_steps": config.num_train_steps - 1, "steady_s": t_end - t0}


def main(steps: int = 16, log_interval: int = 5) -> dict:
    from tasks.core.store import ArtifactStore, work_dir
    from tasks.policy.tokenizer import seed_offline_tokenizer
    from tasks.train import TrainParams, train

    os.environ.setdefault("OPENPI_DATA_HOME", str(OUT / "openpi"))
    seed_offline_tokenizer()
    root, dataset, norm = prepared_inputs()
    params = TrainParams(env_id=ENV_ID, preset="tiny", steps=steps, batch_size=BATCH, log_interval=log_interval, seed=3)

    work = work_dir()
    try:
        t_up = time.monotonic()
        upstream = openpi_style_loop(params, dataset, norm, work)
        t_up = time.monotonic() - t_up
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # ours from a cold train key: drop earlier bench results for the same inputs
    store = ArtifactStore(root)
    store.delete_tree(f"{root}/{ENV_ID}/train")
    t_ours = time.monotonic()
    result = train(params, root=root, dataset=dataset.uri, stats=norm.uri)
    t_ours = time.monotonic() - t_ours
    assert not result.cache_hit
    up_rate = upstream["steady_steps"] / upstream["steady_s"]
    ours_rate = result.metrics["steps_per_second"]
    return report(
        f"P6 training throughput, tiny preset, {ENV_ID}, batch {BATCH}, {steps} steps, log every {log_interval}, CPU",
        [
            ("openpi scripts/train.py-style loop: steady steps/s", up_rate, "steps/s"),
            ("openpi-style wall time (init, compile, steps, checkpoint)", t_up, "s"),
            ("ours (train stage): steady steps/s", ours_rate, "steps/s"),
            ("ours wall time (fetch, init, compile, probes, steps, publish)", t_ours, "s"),
            ("ours peak RSS", result.metrics["peak_rss_mb"], "MB"),
        ],
        ours_rate / up_rate,
        1.0,
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
