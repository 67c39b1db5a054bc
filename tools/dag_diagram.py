"""Draws a DAG as a Mermaid flowchart from Airflow's own task graph (README shows it; a test keeps it current).

`python tools/dag_diagram.py [dag_id]` prints the ```mermaid block.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def mermaid(dag) -> str:
    """Every task and every edge, as Airflow has them."""
    lines = ["```mermaid", "flowchart LR"]
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        node = task.task_id.replace(".", "_")
        notes = []
        if "MappedOperator" in type(task).__name__:
            over = ", ".join(f"{name}s" for name in task._get_specified_expand_input().value)  # shard -> "shards"
            notes.append(f"mapped over {over}")
        if task.queue != "default":
            notes.append(f"queue={task.queue}, pool={task.pool}")
        label = task.task_id + (f"<br/><small>{'; '.join(notes)}</small>" if notes else "")
        lines.append(f'    {node}["{label}"]')
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        for down in sorted(task.downstream_task_ids):
            lines.append(f"    {task.task_id.replace('.', '_')} --> {down.replace('.', '_')}")
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/dag_diagram.py", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument(
        "dag_id",
        nargs="?",
        default="maniskill_openpi_sft",
        help="id of the DAG to draw, one of those in dags/ (default %(default)s)",
    )
    args = parser.parse_args(argv)
    sys.path[:0] = [str(PROJECT)]
    import contextlib
    import io

    from airflow.dag_processing.dagbag import DagBag

    with contextlib.redirect_stdout(io.StringIO()):  # DagBag logs "Filling up the DagBag" to stdout
        bag = DagBag(dag_folder=str(PROJECT / "dags"))
    if args.dag_id not in bag.dags:
        parser.error(f"no DAG {args.dag_id!r} in dags/; there are {sorted(bag.dags)}")
    print(mermaid(bag.dags[args.dag_id]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
