"""The params form of the pipeline DAGs, generated from the run configuration (tasks/core/run_config.py).

The form's defaults are those of the deployment's profile (`PIPELINE_PROFILE`: production, or demo for
tools/demo.sh and the tests); titles, descriptions, sections and bounds come from the RunConfig fields,
so the form and the run config cannot drift. `resolve_run_config` is the first task's body: it refuses
unknown conf keys (with the closest valid name) and builds and validates the typed config before any
work starts; bad input fails the task at once, without retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from tasks.core.run_config import RunConfig, active_profile, asset_overrides, check_keys


def _params(profile: str | None) -> dict[str, Param]:
    defaults = RunConfig.defaults(profile or active_profile())
    schemas = RunConfig.json_schema()
    return {
        f.name: Param(
            defaults[f.name],
            title=f.metadata["title"],
            description=f.metadata["description"],
            section=f.metadata["section"],
            **schemas[f.name],
        )
        for f in RunConfig.settings()
    }


def common_params(profile: str | None = None) -> dict[str, Param]:
    """Every run setting but the env id (the SFT DAG takes one, the backfill DAG a list)."""
    return {name: p for name, p in _params(profile).items() if name != "env_id"}


def run_params(profile: str | None = None) -> dict[str, Param]:
    """Every run setting as a typed params form (the SFT DAG's; a user's DAG wiring the stage tasks takes it too)."""
    return _params(profile)


def profile_doc() -> str:
    """The DAG docs' profile section, generated from the run config so it cannot drift from it."""
    from tasks.core.run_config import DEMO_PROFILE, PROFILES

    active = active_profile()
    defaults = {p: RunConfig.defaults(p) for p in PROFILES}
    shown = [k for k in RunConfig.setting_names() if k in DEMO_PROFILE]
    titles = {f.name: f.metadata["title"] for f in RunConfig.settings()}

    def cell(v: Any) -> str:
        return "—" if v is None else f"`{v}`"

    rows = "\n".join(
        f"| {titles[k]} | {cell(defaults['production'][k])} | {cell(defaults['demo'][k])} |" for k in shown
    )
    return (
        f"### Profiles\nThis deployment's form defaults come from the **{active}** profile (`PIPELINE_PROFILE`). "
        "**production** is openpi's fine-tuning recipe: LoRA from pi0_base with the preset's steps, batch, LR "
        "schedule and EMA, resume points, enough demos and closed-loop episodes for a success rate to mean "
        "something. **demo** is the CPU-sized run of tools/demo.sh and the tests.\n\n"
        f"| setting | production | demo |\n|---|---|---|\n{rows}\n\n"
        "— : left empty, meaning the preset's value (steps, batch), the TaskSpec's (step limit), or none.\n"
    )


def resolve_run_config(
    params: Mapping[str, Any],
    conf: Mapping[str, Any] | None = None,
    asset_events: Mapping[str, Any] | None = None,
    env_id: str | None = None,
    extra_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The run's typed config as plain data (for XCom). `params`: the DAG's params (form defaults merged with
    the trigger's conf by Airflow); `conf`: the trigger's conf, checked for unknown keys; `extra_keys`: conf keys
    the DAG itself takes (the backfill's env_ids)."""
    try:
        check_keys(conf or {}, (*RunConfig.setting_names(), *extra_keys), "run setting")
        values = {k: v for k, v in params.items() if k in RunConfig.setting_names()}
        values.update(asset_overrides(asset_events))
        if env_id is not None:
            values["env_id"] = env_id
        return RunConfig.build(values).to_dict()
    except ValueError as e:  # ConfigError and the stages' own refusals: retrying cannot fix them
        raise AirflowFailException(f"{type(e).__name__}: {e}") from e
