"""serve: a train artifact behind openpi's websocket policy server (what openpi's `scripts/serve_policy.py`
does, which the wheel does not ship). Clients use `openpi_client.websocket_client_policy`.

The checkpoint is fetched from the artifact store (or a `latest.json` pointer is followed) and loaded
with `create_trained_policy` and the TrainConfig that trained it. Observations are what verify feeds:
`{"images": {<ManiSkill sensor>: HWC uint8 or CHW float}, "state": (state_dim,), "prompt": optional}`.

The server's metadata (what `WebsocketClientPolicy.get_server_metadata()` returns) carries the verified protocol:
`protocol.replan_interval` (execute that many actions of each chunk, then ask again), `protocol.camera_size` and
`protocol.env_kwargs` (render the observations as the training frames were), `protocol.max_steps`.

CLI: python -m tasks.serve --root s3://bucket/prefix --env-id PickCube-v1 [--checkpoint URI[@STEP]] [--port 8000]
"""

from __future__ import annotations

import argparse
import logging

from tasks.core.cli import configure_logging, default_root, first_paragraph
from tasks.core.specs import get_spec
from tasks.core.store import ArtifactStore, work_dir


def resolve_checkpoint(store: ArtifactStore, env_id: str, checkpoint: str | None) -> str:
    if checkpoint:
        return checkpoint
    from tasks.core.checkpoints import checkpoint_ref
    from tasks.core.store import latest_uri

    latest = store.read_json(latest_uri(store, env_id))
    if not latest:
        raise ValueError(f"no promoted checkpoint for {env_id} under {store.root} (no latest.json); pass --checkpoint")
    return checkpoint_ref(latest["checkpoint"], latest.get("step"))


def served_protocol(store: ArtifactStore, env_id: str, checkpoint: str, verification: str | None = None) -> dict | None:
    """How the served checkpoint was verified, for clients to act alike: the replan interval (actions executed per
    chunk), the step limit, the camera size and the env kwargs its frames were rendered with (shader, sensor configs,
    control mode). From `verification` (a verify artifact of this checkpoint) or, when the checkpoint is the promoted
    latest, from the verification that promoted it; None when neither says."""
    from tasks.core.checkpoints import checkpoint_ref
    from tasks.core.store import latest_uri

    if verification is None:
        latest = store.read_json(latest_uri(store, env_id)) or {}
        if latest.get("checkpoint") and checkpoint_ref(latest["checkpoint"], latest.get("step")) == checkpoint:
            verification = latest.get("verify")
    manifest = store.read_manifest(verification) if verification else None
    protocol = (manifest.metrics.get("protocol") if manifest is not None else None) or None
    if protocol is None:
        return None
    lineage = manifest.metrics.get("lineage") or {}
    if lineage.get("checkpoint_ref") not in (None, checkpoint):
        raise ValueError(f"{verification} verified {lineage['checkpoint_ref']}, not the served {checkpoint}")
    sensors = protocol["env_kwargs"].get("sensor_configs") or {}
    return {
        "verification": verification,
        "verdict": manifest.metrics.get("verdict"),
        "replan_interval": protocol["execute_steps"],
        "max_steps": protocol["max_steps"],
        "camera_size": sensors.get("width"),  # None: the env's own default size
        "env_kwargs": protocol["env_kwargs"],
    }


def main(argv: list[str] | None = None) -> int:
    from openpi.serving import websocket_policy_server

    from tasks.core.checkpoints import fetch_checkpoint
    from tasks.policy.loading import load_policy

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.serve", description=first_paragraph(__doc__))
    parser.add_argument(
        "--root",
        default=default_root(),
        help="artifact root URI (file:///dir or s3://bucket/prefix; default %(default)s)",
    )
    parser.add_argument("--env-id", required=True, help="registered ManiSkill env id, e.g. PickCube-v1")
    parser.add_argument(
        "--checkpoint",
        help="train artifact URI (its final checkpoint), or <URI>@<step> for one of "
        "the checkpoints it kept (default: the promoted latest)",
    )
    parser.add_argument(
        "--verification",
        help="verify artifact URI of this checkpoint, whose protocol (replan interval, camera size, env kwargs) the "
        "server publishes in its metadata (default: the verification that promoted latest, when serving latest)",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="address the websocket server listens on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port the websocket server listens on (default %(default)s)"
    )
    args = parser.parse_args(argv)
    spec = get_spec(args.env_id)
    store = ArtifactStore(args.root)
    uri = resolve_checkpoint(store, spec.env_id, args.checkpoint)
    manifest, local = fetch_checkpoint(store, uri, work_dir())
    policy, config = load_policy(spec, manifest, local)
    metadata = {
        **(config.policy_metadata or {}),
        "checkpoint": uri,
        "action_horizon": config.model.action_horizon,
        "protocol": served_protocol(store, spec.env_id, uri, args.verification),
    }
    if metadata["protocol"] is None:
        logging.warning("no verification of %s given or promoted: clients get no replan interval or camera size", uri)
    logging.info("serving %s on %s:%d", uri, args.host, args.port)
    websocket_policy_server.WebsocketPolicyServer(
        policy, host=args.host, port=args.port, metadata=metadata
    ).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
