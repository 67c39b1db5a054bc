# Worker/scheduler image: the same single uv environment the tests use, plus Mesa lavapipe for CPU rendering.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/pipeline
COPY pyproject.toml uv.lock ./
COPY tools ./tools
RUN pip install --no-cache-dir uv && PIPELINE_PYTHON=$(command -v python3.11) tools/setup_system.sh \
 && UV_PYTHON_DOWNLOADS=never uv sync --frozen --no-dev --no-install-project --python "$(command -v python3.11)"
# The project itself is a package (stages, DAG-side building blocks, stage CLIs as console scripts): installed
# after the dependencies so that a code change does not rebuild that layer.
COPY README.md ./
COPY tasks ./tasks
RUN UV_PYTHON_DOWNLOADS=never uv sync --frozen --no-dev --python "$(command -v python3.11)"
COPY dags ./dags
COPY plugins ./plugins
# The GPU check (tools/gpu_check.sh) and the benchmarks, runnable on the workers.
COPY bench ./bench
ENV PATH=/opt/pipeline/.venv/bin:$PATH \
    VK_ICD_FILENAMES=/opt/pipeline/.cache/mesa/lvp_icd.json \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/pipeline/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/pipeline/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
