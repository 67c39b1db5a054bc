"""Opens an HTML file in headless Chromium (Debian's chromium + chromedriver, driven by Selenium) and reports
what a reader would see: section ids, whether each figure decoded, table text, and a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_available() -> bool:
    return Path(CHROMEDRIVER).is_file() and any(shutil.which(b) for b in ("chromium", "chromium-browser"))


def inspect_page(path: Path, screenshot: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,2400"):
        options.add_argument(arg)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    # An explicit driver path: Selenium Manager (which downloads drivers) is never consulted.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(Path(path).resolve().as_uri())
        page = driver.execute_script("""
            return {
              title: document.title,
              ids: [...document.querySelectorAll('[id]')].map(e => e.id),
              images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                                      width: i.naturalWidth, height: i.naturalHeight})),
              tables: Object.fromEntries([...document.querySelectorAll('table[id]')].map(
                  t => [t.id, [...t.rows].map(r => [...r.cells].map(c => c.innerText))])),
              text: document.body.innerText,
            };""")
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    return page


def chromium_driver(width: int = 1400, height: int = 1800):
    """Headless Debian Chromium through its own chromedriver (Selenium Manager, which downloads drivers, never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class AirflowUI:
    """Airflow 3's React UI as a user drives it: the DAG page, the trigger form (sections of fields; enums and
    multi-selects are react-select comboboxes, `#element_<param>`), the graph view."""

    def __init__(self, api: str, driver=None, timeout: float = 60):
        from selenium.webdriver.support.ui import WebDriverWait

        self.api = api.rstrip("/")
        self.driver = driver or chromium_driver()
        self.wait = WebDriverWait(self.driver, timeout)

    def close(self) -> None:
        self.driver.quit()

    def _find(self, css: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def _all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def open_dag(self, dag_id: str) -> None:
        self.driver.get(f"{self.api}/dags/{dag_id}")
        self._find("button[aria-label='Trigger Dag']")

    def open_trigger_form(self, dag_id: str) -> None:
        self.open_dag(dag_id)
        self._find("button[aria-label='Trigger Dag']").click()
        self._find("[data-testid='config-form']")

    def sections(self) -> list[str]:
        return [b.text.strip() for b in self._all("[data-testid='config-form'] button[data-part='item-trigger']")]

    def open_section(self, title: str) -> None:
        """Opens one section of the form (the accordion shows one at a time)."""
        import time

        for b in self._all("[data-testid='config-form'] button[data-part='item-trigger']"):
            if b.text.strip() == title:
                if b.get_attribute("aria-expanded") != "true":
                    b.click()
                    time.sleep(0.5)  # the accordion animates open
                return
        raise AssertionError(f"no form section {title!r}; sections: {self.sections()}")

    def fields(self) -> dict[str, dict]:
        """The visible fields of the open section: param name -> label text, kind (input/select) and required."""
        return self.driver.execute_script("""
            const out = {};
            for (const root of document.querySelectorAll(
                "[data-testid='config-form'] [data-scope='field'][data-part='root'][role='group']")) {
              if (!root.offsetParent) continue;
              const named = root.querySelector("[name^='element_']");
              if (!named) continue;
              const label = root.querySelector("label[data-part='label']");
              const combo = root.querySelector("input[role='combobox']");
              const kind = combo ? 'select' : root.querySelector("[role='spinbutton']") ? 'number'
                         : named.type === 'checkbox' ? 'switch' : 'text';
              const select = combo ? root.querySelector("[id^='element_']") : null;
              out[named.name.slice('element_'.length)] = {
                label: label ? label.innerText.replace('*', '').trim() : '',
                kind: kind,
                required: !!(label && label.hasAttribute('data-required')),
                value: kind === 'select' ? select.innerText.trim() : kind === 'switch' ? named.checked : named.value,
              };
            }
            return out;""")

    def set_text(self, name: str, value) -> None:
        from selenium.webdriver.common.keys import Keys

        el = self._find(f"input[name='element_{name}']")
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.BACKSPACE)
        el.send_keys(str(value))

    def choose(self, name: str, *values: str) -> None:
        """Picks values in a dropdown or multi-select (react-select: type the option, Enter)."""
        from selenium.webdriver.common.keys import Keys

        import time

        for value in values:
            box = self._find(f"#element_{name} input[role='combobox']")
            box.click()
            box.send_keys(value)
            time.sleep(0.3)  # the menu filters as it is typed into
            box.send_keys(Keys.ENTER)
            time.sleep(0.3)

    def options(self, name: str) -> list[str]:
        """The choices a dropdown offers (opens it, reads the menu, closes it)."""
        from selenium.webdriver.common.keys import Keys

        box = self._find(f"#element_{name} input[role='combobox']")
        box.click()
        box.send_keys(Keys.ARROW_DOWN)
        texts = [o.text for o in self._all(f"#element_{name} [role='option']")]
        # Blur closes the menu without picking (Tab would pick the highlighted option, Escape close the dialog).
        self.driver.execute_script("document.activeElement.blur()")
        return texts

    def trigger_button(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.presence_of_element_located(
            (By.XPATH, "//*[@role='dialog']//button[normalize-space()='Trigger']")))

    def show_graph(self, dag_id: str) -> None:
        self.open_dag(dag_id)
        self._find("button[aria-label^='Show Graph']").click()
        self._find(".react-flow__node")

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path
