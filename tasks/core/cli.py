"""Small helpers shared by the stage CLIs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.store import StageResult

DEFAULT_ROOT_ENV = "PIPELINE_ARTIFACT_ROOT"


def default_root() -> str:
    return os.environ.get(DEFAULT_ROOT_ENV, f"file://{Path.cwd() / 'artifacts'}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Exposes a params dataclass as --flags (bools as --flag/--no-flag)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if "bool" in kind:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, default=default, required=required)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=default, required=required)
        else:
            parser.add_argument(flag, type=str, default=default, required=required)


def params_from_args(cls: type, args: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def cli(description: str, params_cls: type, run: Callable[..., StageResult],
        inputs: dict[str, bool | str] | None = None) -> Callable[[list[str] | None], int]:
    """Builds `main(argv)` for a stage: `--root`, input URIs, params flags; prints the result as JSON on stdout.

    `inputs` maps each input-artifact argument to whether it takes several URIs (True), one (False), or one that
    may be left out ("optional").
    """
    inputs = inputs or {}

    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--root", default=default_root(), help="artifact root URI (file:///dir or s3://bucket/prefix)")
        for name, several in inputs.items():
            parser.add_argument(f"--{name.replace('_', '-')}", required=several != "optional",
                                nargs="+" if several is True else None,
                                help="input artifact URIs" if several is True else "input artifact URI")
        add_dataclass_args(parser, params_cls)
        args = parser.parse_args(argv)
        params = params_from_args(params_cls, args)
        kwargs = {name: getattr(args, name) for name in inputs}
        # Upstream tools print progress on stdout; keep stdout for the one JSON result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(params, root=args.root, **kwargs)
        print(json.dumps(result.to_dict()), flush=True)
        return 0

    return main
