"""The package's shape, read from the source: which module may import which (imports inside functions count too).

- `tasks/<stage>.py`: the stages. A stage never imports another stage, the flows or the Airflow side.
- `tasks/core/`: store, stage runner, params and run config, task specs, demo files, report HTML. It never imports
  a stage, the openpi or ManiSkill side (nor openpi, mani_skill, sapien, jax, torch or airflow themselves), so a DAG
  file can parse and a run config can be checked without them.
- `tasks/policy/` (openpi side) and `tasks/sim/` (ManiSkill side): libraries for the stages; they import core, each
  other's package never, and no stage.
- `tasks/flows/` (stages run in order in one process) and `tasks/airflow_tasks/` (the stages as Airflow tasks):
  the only modules that import stages.
And no import circle anywhere, hidden in a function or not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
TASKS = PROJECT / "tasks"
HEAVY = ("openpi", "openpi_client", "mani_skill", "sapien", "jax", "flax", "torch", "lerobot", "airflow", "mplib")


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (`from a import b` counts as a.b when a.b is a
    module of ours, else as a), and every module of ours it names in a string (`python -m tasks.sim.replay_worker`,
    `importlib.import_module("tasks.x")`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            found.add(node.value)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add(f"<relative import in {path.name}>")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in TASKS.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def kind(module: str) -> str:
    parts = module.split(".")
    if MODULES[module].name == "__init__.py":  # a subpackage's __init__ belongs to that subpackage
        return "package" if len(parts) == 1 else parts[1]
    return "stage" if len(parts) == 2 else parts[1]


def test_every_stage_is_a_top_level_module_and_the_rest_sit_in_their_packages():
    stages = sorted(m for m in MODULES if kind(m) == "stage")
    assert stages == [
        "tasks.convert",
        "tasks.download",
        "tasks.maintenance",
        "tasks.promote",
        "tasks.render",
        "tasks.rollback",
        "tasks.run_report",
        "tasks.select_checkpoint",
        "tasks.serve",
        "tasks.stats",
        "tasks.train",
        "tasks.verify",
    ]
    assert {kind(m) for m in MODULES} == {"stage", "package", "core", "policy", "sim", "flows", "airflow_tasks"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    allowed = {
        "stage": {"core", "policy", "sim", "package"},
        "core": {"core", "package"},
        "policy": {"core", "policy", "package"},
        "sim": {"core", "sim", "package"},
        "flows": {"core", "policy", "sim", "stage", "flows", "package"},
        "airflow_tasks": {"core", "stage", "airflow_tasks", "package"},
        "package": {"package"},
    }[kind(module)]
    wrong = sorted(m for m in GRAPH[module] if kind(m) not in allowed)
    assert not wrong, f"{module} ({kind(module)}) imports {wrong}"
    if kind(module) != "airflow_tasks":
        assert not any(m.split(".")[0] == "airflow" for m in imports_of(MODULES[module])), f"{module} imports Airflow"
    if kind(module) == "core":
        # LeRobot's key constants are a plain module (no torch): the dataset layout is named with them
        heavy = sorted(m for m in imports_of(MODULES[module]) if m.split(".")[0] in HEAVY and m != "lerobot.constants")
        assert not heavy, f"{module} is core but imports {heavy}"


def test_no_relative_imports():
    relative = sorted(m for p in MODULES.values() for m in imports_of(p) if m.startswith("<relative"))
    assert not relative, f"write absolute imports (tasks.core.x), which the rules above can read: {relative}"


@pytest.mark.parametrize("dag_file", sorted((PROJECT / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dag_files_only_wire(dag_file):
    """A DAG file takes its tasks from tasks.airflow_tasks and settings from tasks.core; it never calls a stage."""
    ours = {m for m in imports_of(dag_file) if m in MODULES}
    wrong = sorted(m for m in ours if kind(m) not in ("core", "airflow_tasks"))
    assert not wrong, f"{dag_file.name} imports {wrong}"


def test_core_pulls_in_nothing_heavy_even_indirectly():
    """Importing every core module (what a DAG file and the run config need) loads no stage and no heavy library;
    LeRobot's constants module is the one exception (the dataset keys are LeRobot's own names)."""
    code = (
        "import importlib, pkgutil, sys, tasks.core\n"
        "for m in pkgutil.iter_modules(tasks.core.__path__): importlib.import_module('tasks.core.' + m.name)\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = sorted(
        m
        for m in loaded
        if m.split(".")[0] in HEAVY and m not in ("lerobot", "lerobot.constants", "lerobot.__version__")
    )
    assert not heavy, heavy
    assert not [m for m in loaded if m.startswith("tasks.") and not m.startswith("tasks.core")]


def test_no_import_circles():
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
