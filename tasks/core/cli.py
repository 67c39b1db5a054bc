"""Small helpers shared by the CLIs: the stage CLIs' typed parser (tyro), logging and the default artifact root."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

if TYPE_CHECKING:  # not imported at run time: DAG files and the render workers import this module, keep it light
    from tasks.core.stage import StageResult

DEFAULT_ROOT_ENV = "PIPELINE_ARTIFACT_ROOT"

ROOT_HELP = "artifact root URI (file:///dir or s3://bucket/prefix)"


def default_root() -> str:
    return os.environ.get(DEFAULT_ROOT_ENV, f"file://{Path.cwd() / 'artifacts'}")


def configure_logging() -> None:
    """The stages' progress (`tasks.*` loggers) to stderr at INFO, other libraries' at WARNING (their INFO chatter
    would bury it, and fill the log tail a failed render reports); unless logging is configured already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    # a stage run as `python -m tasks.<stage>` logs as `__main__`, not under `tasks`
    for name in ("tasks", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)


def first_paragraph(doc: str | None) -> str:
    """A module docstring's first paragraph as one line: a CLI's description."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def arguments(params_cls: type, inputs: dict[str, bool | str] | None = None) -> type:
    """A stage CLI's arguments as one frozen dataclass for tyro: the input-artifact URIs, `root`, and the params
    dataclass's fields flattened in (`--env-id`, not `--params.env-id`; the fields' comments are the flags' help)."""
    import tyro

    fields: list[tuple] = []
    for name, several in (inputs or {}).items():
        if several is True:
            fields.append((name, Annotated[list[str], tyro.conf.arg(help="input artifact URIs (one or more)")]))
        elif several == "optional":
            fields.append(
                (
                    name,
                    Annotated[str, tyro.conf.arg(help="input artifact URI; may be left out")],
                    dataclasses.field(default=""),
                )
            )
        else:
            fields.append((name, Annotated[str, tyro.conf.arg(help="input artifact URI")]))
    fields.append(("root", Annotated[str, tyro.conf.arg(help=ROOT_HELP)], dataclasses.field(default=default_root())))
    fields.append(("params", Annotated[params_cls, tyro.conf.arg(name="")]))
    return dataclasses.make_dataclass(f"{params_cls.__name__}Cli", fields, frozen=True, kw_only=True)


def _prog(module: str) -> str | None:
    """`python -m tasks.<stage>` for the usage line (`__main__` when the stage runs as a script)."""
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else ""
    return f"python -m {module}" if module else None


def cli(
    description: str | None,
    params_cls: type,
    run: Callable[..., StageResult],
    inputs: dict[str, bool | str] | None = None,
) -> Callable[[list[str] | None], int]:
    """Builds `main(argv)` for a stage: `--root`, input URIs, params flags; prints the result as JSON on stdout.

    `description` is the module docstring: its first paragraph describes the CLI in `--help`. `inputs` maps each
    input-artifact argument to whether it takes several URIs (True), one (False), or one that may be left out
    ("optional").
    """
    inputs = inputs or {}

    def main(argv: list[str] | None = None) -> int:
        import tyro

        configure_logging()
        args = tyro.cli(
            arguments(params_cls, inputs),
            args=argv,
            prog=_prog(run.__module__),
            description=first_paragraph(description),
        )
        kwargs = {name: getattr(args, name) for name in inputs}
        # Upstream tools print progress on stdout; keep stdout for the one JSON result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args.params, root=args.root, **kwargs)
        print(json.dumps(result.to_dict()), flush=True)
        return 0

    return main
