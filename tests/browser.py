"""Headless Chromium for the tests that open a page: started with the flags this machine needs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
HAVE_CHROMIUM = CHROMIUM.exists() and CHROMEDRIVER.exists()
needs_chromium = pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Chromium and chromedriver")


@contextlib.contextmanager
def headless_chromium(profile: Path, window: str = "1366,900"):
    """A Selenium driver for headless Chromium with its console log kept; quit on leaving."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def check_report(report: Path, tmp_path: Path, min_images: int = 1, min_sweep_images: int = 0) -> None:
    """Open a report: no console error, every image drawn and inside the page's width, the sweep's figures."""
    with headless_chromium(tmp_path / "profile") as driver:
        driver.get(report.as_uri())
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        n_images = driver.execute_script("return document.images.length")
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert n_images >= min_images and broken == 0
        sweep_images = driver.execute_script("return document.querySelectorAll('#sweep img').length")
        assert sweep_images >= min_sweep_images
        overflow = driver.execute_script(
            "return Array.from(document.images).filter(i => i.getBoundingClientRect().right > window.innerWidth + 1).length")
        assert overflow == 0
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
