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
