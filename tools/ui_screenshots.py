"""Screenshots of the real Airflow UI for README: the trigger form and the graph of `maniskill_openpi_sft`.

Starts the loopback deployment of the integration tier (Postgres, Redis, api-server, scheduler,
dag-processor, workers; tests/fixtures/deployment.py) with the production profile, opens the pages in
headless Chromium and saves `trigger-form.png` and `graph.png`. Run after `tools/setup.sh`:

    source tools/env.sh && python tools/ui_screenshots.py [out_dir]   # default: docs/images
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAG_ID = "maniskill_openpi_sft"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else PROJECT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [str(PROJECT)]
    os.environ["PIPELINE_PROFILE"] = "production"  # the form a deployment shows
    from tests.fixtures.browser import AirflowUI, chromium_driver
    from tests.fixtures.deployment import Deployment

    dep = Deployment(Path(tempfile.mkdtemp(prefix="ui-screenshots-")))
    try:
        dep.start()
        dep.wait_for_dag(DAG_ID)
        ui = AirflowUI(dep.api, chromium_driver(1300, 1350))
        try:
            ui.open_trigger_form(DAG_ID)
            ui.open_section("Training")
            time.sleep(1)
            print(ui.screenshot(out / "trigger-form.png"))
            ui.driver.set_window_size(1700, 620)
            ui.show_graph(DAG_ID)
            panel = ui._all("button[aria-label='Collapse Details Panel']")
            if panel:
                panel[0].click()
            time.sleep(2)
            fit = ui._all("button.react-flow__controls-fitview")
            if fit:
                fit[0].click()
                time.sleep(1)
            print(ui.screenshot(out / "graph.png"))
        finally:
            ui.close()
    finally:
        dep.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
