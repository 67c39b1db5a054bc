"""openpi side of a ManiSkill task: the transforms and data config shared by stats, training and inference.

`ManiSkillInputs` is the one place where a dataset frame (or a live env observation) becomes a model
input, so the norm stats are computed on exactly the arrays the model sees and their widths agree with
the model input by construction (the manual workflow's 18-vs-7 bug cannot happen).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.training import config as _config
from typing_extensions import override

from tasks.core.dataset import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY
from tasks.core.specs import OPENPI_CAMERAS, TaskSpec

# pi0's three camera slots, in the order the model reads them.


def to_hwc_uint8(image) -> np.ndarray:
    """LeRobot yields float32 CHW in [0, 1]; the env and openpi use uint8 HWC."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating):
        image = np.clip(np.round(255 * image), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = np.transpose(image, (1, 2, 0))
    return image


@dataclasses.dataclass(frozen=True)
class ManiSkillInputs(_transforms.DataTransformFn):
    """Repacked frame -> openpi model input: camera rename, black missing cameras, state/action checks."""

    camera_map: tuple[tuple[str, str], ...]
    state_dim: int
    action_dim: int
    model_type: _model.ModelType = _model.ModelType.PI0

    def __call__(self, data: dict) -> dict:
        state = np.asarray(data["state"], dtype=np.float32)
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state has width {state.shape[-1]}, the task spec says {self.state_dim}")
        out = {"state": state}
        if "images" in data:  # absent only when the stats stage feeds state/actions columns without decoding images
            out["image"], out["image_mask"] = self._images(data["images"])
        if "actions" in data:
            actions = np.asarray(data["actions"], dtype=np.float32)
            if actions.shape[-1] != self.action_dim:
                raise ValueError(f"actions have width {actions.shape[-1]}, the task spec says {self.action_dim}")
            out["actions"] = actions
        if "prompt" in data:
            prompt = data["prompt"]
            out["prompt"] = prompt.decode() if isinstance(prompt, bytes) else prompt
        return out

    def _images(self, data_images: dict) -> tuple[dict, dict]:
        images = {}
        for sensor, slot in self.camera_map:
            if slot not in OPENPI_CAMERAS:
                raise ValueError(f"camera slot {slot!r} is not one of pi0's {OPENPI_CAMERAS}")
            images[slot] = to_hwc_uint8(data_images[sensor])
        reference = next(iter(images.values()))
        masks = {slot: np.True_ for slot in images}
        for slot in OPENPI_CAMERAS:
            if slot not in images:
                images[slot] = np.zeros_like(reference)
                # pi0 ignores masked slots; pi0-FAST expects all slots marked present.
                masks[slot] = np.True_ if self.model_type == _model.ModelType.PI0_FAST else np.False_
        return images, masks


@dataclasses.dataclass(frozen=True)
class ManiSkillOutputs(_transforms.DataTransformFn):
    """Model output (padded to the model's action_dim) -> env actions of the task's width."""

    action_dim: int

    def __call__(self, data: dict) -> dict:
        return {"actions": np.asarray(data["actions"][..., : self.action_dim])}


def repack_transform(spec: TaskSpec) -> _transforms.Group:
    """Dataset keys (LeRobot conventions, see tasks/convert.py) -> the keys ManiSkillInputs reads."""
    mapping = {
        "images": {sensor: IMAGE_KEY_PREFIX + sensor for sensor, _ in spec.cameras},
        "state": STATE_KEY,
        "actions": ACTION_KEY,
        "prompt": "prompt",
    }
    return _transforms.Group(inputs=[_transforms.RepackTransform(mapping)])


def data_transforms(spec: TaskSpec, model_type: _model.ModelType = _model.ModelType.PI0) -> _transforms.Group:
    return _transforms.Group(
        inputs=[ManiSkillInputs(spec.cameras, spec.state_dim, spec.action_dim, model_type)],
        outputs=[ManiSkillOutputs(spec.action_dim)],
    )


@dataclasses.dataclass(frozen=True)
class ManiSkillDataConfig(_config.DataConfigFactory):
    """openpi DataConfigFactory for a converted ManiSkill dataset (repo_id = the convert artifact's)."""

    spec: TaskSpec | None = None

    @override
    def create(self, assets_dirs: pathlib.Path, model_config: _model.BaseModelConfig) -> _config.DataConfig:
        assert self.spec is not None, "ManiSkillDataConfig needs a TaskSpec"
        return dataclasses.replace(
            self.create_base_config(assets_dirs, model_config),
            repack_transforms=repack_transform(self.spec),
            data_transforms=data_transforms(self.spec, model_config.model_type),
            model_transforms=_config.ModelTransformFactory(default_prompt=self.spec.prompt)(model_config),
            action_sequence_keys=(ACTION_KEY,),
            prompt_from_task=True,
        )
