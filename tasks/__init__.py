"""Pipeline stages: plain typed functions, no Airflow import, each runnable as `python -m tasks.<stage>`."""
