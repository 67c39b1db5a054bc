"""Draws a DAG as a Mermaid flowchart from Airflow's own task graph (README shows it; a test keeps it current).

`python plugins/dag_diagram.py [dag_id]` prints the ```mermaid block.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def mermaid(dag, config_task: str = "resolve", collector_task: str = "report") -> str:
    """Every task and edge, with two simplifications that keep the picture readable: the config task's
    fan-out (its result feeds every task) is drawn only to the tasks that depend on nothing else, and the
    collector task's fan-in (it reads every stage's result) is drawn as one dotted edge from the tasks
    nothing else follows."""
    lines = ["```mermaid", "flowchart LR"]
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        node = task.task_id.replace(".", "_")
        notes = []
        if "MappedOperator" in type(task).__name__:
            notes.append("mapped over shards")
        if task.queue != "default":
            notes.append(f"queue={task.queue}, pool={task.pool}")
        label = task.task_id + (f"<br/><small>{'; '.join(notes)}</small>" if notes else "")
        lines.append(f'    {node}["{label}"]')
    for task in sorted(dag.tasks, key=lambda t: t.task_id):
        for down in sorted(task.downstream_task_ids):
            if task.task_id.endswith(config_task) and dag.get_task(down).upstream_task_ids != {task.task_id}:
                continue
            arrow = "-->"
            if down.endswith(collector_task):
                if task.downstream_task_ids != {down}:
                    continue
                arrow = "-. all stage results .->"
            lines.append(f"    {task.task_id.replace('.', '_')} {arrow} {down.replace('.', '_')}")
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path[:0] = [str(PROJECT), str(PROJECT / "plugins")]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    print(mermaid(bag.dags[argv[0] if argv else "maniskill_openpi_sft"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
