"""Evaluation protocols: the recorded conditions of a closed-loop evaluation, which two figures must share to be compared."""

from __future__ import annotations

from typing import Any


def protocol_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """What differs between two recorded protocols, in words ([] when they are the same)."""
    if not a or not b:
        return ["no recorded evaluation protocol" + ("" if a else " (candidate)") + ("" if b else " (current)")]
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "env_kwargs":
            ka, kb = a.get(key) or {}, b.get(key) or {}
            out += [
                f"env_kwargs.{k}: {ka.get(k)!r} vs {kb.get(k)!r}"
                for k in sorted(set(ka) | set(kb))
                if ka.get(k) != kb.get(k)
            ]
        elif a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} vs {b.get(key)!r}")
    return out
