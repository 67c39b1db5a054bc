"""The LeRobot dataset's layout as the pipeline writes it: feature keys (LeRobot's own constants) and repo ids.

convert writes these keys; stats, training's data config and verify's open-loop check read them.
"""

from __future__ import annotations

from lerobot.constants import ACTION, OBS_IMAGES, OBS_STATE

IMAGE_KEY_PREFIX = f"{OBS_IMAGES}."  # + the ManiSkill sensor name, e.g. observation.images.base_camera
STATE_KEY = OBS_STATE
ACTION_KEY = ACTION


def repo_id_for(env_id: str, key: str) -> str:
    """LeRobot repo id of a converted dataset: unique per artifact, so caches never mix datasets."""
    return f"maniskill/{env_id}-{key}"
