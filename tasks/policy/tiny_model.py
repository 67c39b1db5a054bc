"""pi0 with a smaller SigLIP tower: the tiny preset's model, fast enough to learn on a CPU.

openpi's `Pi0.__init__` hard-codes SigLIP So400m/14 (27 layers of width 1152, 256 tokens per 224-px camera). Even
frozen it costs seconds per training step and per inference on two cores, so a tiny pi0 could never learn in a test.
openpi has no option for the tower and we do not fork it: `SmallTowerPi0Config.create()` builds openpi's own `Pi0`
while the name `_siglip` in `openpi.models.pi0` points at a stand-in whose `Module(...)` forces our variant, then puts
the real module back. Everything else is openpi's: the model class, `load` (which calls `create`), the loss, the
sampler, `create_trained_policy`. The tower's linen module is baked into the nnx graph at creation, so nothing reads
the patched name afterwards.

Variant and patch size were chosen by measurement (docs/benchmarks.md, "Tiny model"): with So400m gone, the number
of image tokens per camera ((224 / patch)^2, three camera slots) costs more than the tower itself, so the patch is
the lever.
"""

from __future__ import annotations

import dataclasses
import threading
import types

from openpi.models import pi0_config

DEFAULT_VISION_VARIANT = "So400m/14"  # what openpi's Pi0 builds (lora, full, and tiny checkpoints before 2026-12-08)

_PATCH_LOCK = threading.Lock()  # two threads creating models at once must not see each other's tower


def _forcing_siglip(variant: str) -> types.ModuleType:
    """A stand-in for `openpi.models.siglip` whose `Module` builds `variant` whatever variant the caller names."""
    import openpi.models.siglip as _siglip

    proxy = types.ModuleType("openpi.models.siglip", f"openpi.models.siglip with the variant forced to {variant}")
    proxy.__dict__.update(_siglip.__dict__)

    def module(num_classes=None, **kw):
        return _siglip.Module(num_classes, **{**kw, "variant": variant})

    proxy.Module = module
    return proxy


@dataclasses.dataclass(frozen=True)
class SmallTowerPi0Config(pi0_config.Pi0Config):
    # SigLIP variant of the vision tower, in big_vision's "<size>/<patch>" form (`openpi.models.siglip.decode_variant`).
    vision_variant: str = "mu/28"  # the tiny preset's (tasks/core/params.py PRESET_DEFAULTS sets it explicitly)

    def create(self, rng):
        import flax.nnx as nnx
        from openpi.models import pi0 as _pi0

        with _PATCH_LOCK:
            original = _pi0._siglip
            _pi0._siglip = _forcing_siglip(self.vision_variant)
            try:
                return _pi0.Pi0(self, rngs=nnx.Rngs(rng))
            finally:
                _pi0._siglip = original


def vision_variant(model: pi0_config.Pi0Config) -> str:
    """The SigLIP variant a model config builds."""
    return getattr(model, "vision_variant", DEFAULT_VISION_VARIANT)
