"""Where ManiSkill renders: a GPU when one is present, else Mesa's lavapipe (software Vulkan) from the project's cache.

The one home of the device choice (`resolve_device`: auto -> gpu or cpu) and of the software-Vulkan check
(`require_lavapipe`, `ensure_software_vulkan`), for the render stage, the spec probe and the rollouts.
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


def resolve_device(device: str) -> str:
    """A device setting as a render backend: `auto` is "gpu" when nvidia-smi lists a GPU, else "cpu"; cpu and gpu
    are taken as given.

    Why here: every stage that renders decides the same way, so a run renders on the same backend whichever stage
    asks (verify's rollout is the exception: its `auto` means the training frames' backend, see tasks/verify.py).
    """
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    return device


def lavapipe_icd() -> Path | None:
    """Mesa lavapipe's Vulkan ICD (software rendering); None when absent. Looked for in PIPELINE_LAVAPIPE_ICD, then in
    VK_ICD_FILENAMES when that names lavapipe (an image that installed this package as a wheel has no source tree:
    its Mesa is wherever the image put it), then where tools/setup_system.sh puts it in a checkout."""
    chosen = os.environ.get("PIPELINE_LAVAPIPE_ICD")
    if chosen:
        return Path(chosen) if Path(chosen).is_file() else None
    for name in filter(None, os.environ.get("VK_ICD_FILENAMES", "").split(os.pathsep)):
        if "lvp" in Path(name).name and Path(name).is_file():
            return Path(name)
    return LAVAPIPE_ICD if LAVAPIPE_ICD.is_file() else None


LAVAPIPE_MISSING = (
    "software Vulkan driver (Mesa lavapipe) not found; run tools/setup_system.sh (installs it from "
    "bookworm-backports) or set PIPELINE_LAVAPIPE_ICD to its lvp_icd.json"
)


def require_lavapipe(error: type[Exception] = RuntimeError, message: str = LAVAPIPE_MISSING) -> Path:
    """Mesa lavapipe's Vulkan ICD, or `error(message)` when it is missing.

    Why: CPU rendering (render_backend="cpu") goes through software Vulkan; without the driver SAPIEN fails late
    and obscurely, so a CPU render or rollout is refused up front with the fix. `message` lets a caller say why it
    renders on the CPU (an evaluation renders like its training frames).
    """
    icd = lavapipe_icd()
    if icd is None:
        raise error(message)
    return icd


EVAL_LAVAPIPE_MISSING = (
    "the training frames were rendered on the CPU (render_backend='cpu'), and evaluation renders like them, but the "
    "software Vulkan driver is missing: run tools/setup_system.sh on this worker (Mesa lavapipe from "
    "bookworm-backports), or set device=gpu to render the rollout on the GPU (a different protocol)"
)


def ensure_software_vulkan(render_backend: str = "cpu", missing: str = EVAL_LAVAPIPE_MISSING) -> None:
    """CPU rendering needs Mesa lavapipe, also on a GPU worker: point Vulkan at it before SAPIEN starts.

    Why one place: every env made in this process (the spec probe, an eval env, the eval workers, which inherit it)
    renders on `render_backend`; a GPU backend, or a driver already chosen (VK_ICD_FILENAMES), is left alone.
    """
    if render_backend != "cpu" or os.environ.get("VK_ICD_FILENAMES"):
        return
    icd = require_lavapipe(ValueError, missing)
    os.environ["VK_ICD_FILENAMES"] = str(icd)
