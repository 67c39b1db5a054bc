"""The pipeline's stages: plain typed functions, no Airflow import, each runnable as `python -m tasks.<stage>`.

`tasks.core` is what the stages share (no stage, openpi, ManiSkill or Airflow import), `tasks.policy` the openpi
side, `tasks.sim` the ManiSkill side; `tasks.flows` runs stages in order in one process and `tasks.airflow_tasks`
makes them Airflow tasks. No stage imports another (tests/test_layout.py).
"""
