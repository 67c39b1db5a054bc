"""Where ManiSkill renders: a GPU when one is present, else Mesa's lavapipe (software Vulkan) from the project's cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path



PROJECT_ROOT = Path(__file__).resolve().parents[2]
LAVAPIPE_ICD = PROJECT_ROOT / ".cache" / "mesa" / "lvp_icd.json"


def gpu_available() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def lavapipe_icd() -> Path | None:
    """Mesa lavapipe's Vulkan ICD (software rendering), where tools/setup_system.sh puts it; None when absent."""
    icd = Path(os.environ.get("PIPELINE_LAVAPIPE_ICD", str(LAVAPIPE_ICD)))
    return icd if icd.is_file() else None
