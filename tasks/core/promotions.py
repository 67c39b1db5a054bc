"""Each task's promotion history: one record per change of `latest.json` (a promotion or a rollback), written once.

Records live under `<root>/<env_id>/promotions/<UTC time>-<action>-<id>.json`; the history is their listing,
newest first. promote and rollback add to it; maintenance keeps the artifacts the newest records name.
"""

from __future__ import annotations

import getpass
import platform
import time
import uuid
from typing import Any

from tasks.core.store import PAYLOAD_TIME_FORMAT, ArtifactStore

HISTORY = "promotions"  # per-task folder of promotion records (not a stage)
ACTIONS = ("promote", "rollback")


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{platform.node()}"


def record(
    store: ArtifactStore, env_id: str, action: str, entry: dict[str, Any], replaced: dict[str, Any] | None, actor: str
) -> str:
    """Adds one record of a change of latest; returns its URI."""
    if action not in ACTIONS:
        raise ValueError(f"unknown registry action {action!r}: one of {ACTIONS}")
    stamp = time.strftime(PAYLOAD_TIME_FORMAT, time.gmtime())
    uri = f"{store.root}/{env_id}/{HISTORY}/{stamp}-{action}-{uuid.uuid4().hex[:8]}.json"
    store.write_json(
        uri, {"action": action, "at": time.time(), "by": actor or cli_actor(), "entry": entry, "replaced": replaced}
    )
    return uri


def history(store: ArtifactStore, env_id: str) -> list[dict[str, Any]]:
    """The task's records, newest first, each with its `uri`."""
    base = f"{store.root}/{env_id}/{HISTORY}"
    found = []
    for name in store.children(base):
        data = store.read_json(f"{base}/{name}") if name.endswith(".json") else None
        if isinstance(data, dict) and "entry" in data:
            found.append({**data, "uri": f"{base}/{name}"})
    return sorted(found, key=lambda r: r.get("at", 0.0), reverse=True)
