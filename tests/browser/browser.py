"""Headless Chromium (Debian's `chromium` and `chromium-driver`) through selenium: open a page,
wait until it shows the expected text, save a screenshot of the viewport."""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WIDTH, HEIGHT = 1280, 800
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "install Debian's `chromium` and `chromium-driver` (.ci/run does, as root)"
# Panels that would cover the page in a screenshot: MLflow's assistant.
CLOSE_BUTTONS = ('[data-component-id="mlflow.assistant.chat_panel.close"]',)


def missing_reason() -> str | None:
    """Why this machine cannot run the browser check, or None when it can."""
    if not any(shutil.which(name) for name in BROWSERS):
        return f"no Chromium on PATH ({', '.join(BROWSERS)}): {INSTALL}"
    if not shutil.which("chromedriver"):
        return f"no chromedriver on PATH: {INSTALL}"
    return None


@dataclass
class Page:
    """A page a person reads: `texts` must all be visible; `focus` (one of them) is scrolled
    into view for the screenshot `name`.png."""

    name: str
    url: str
    texts: list[str]
    focus: str | None = None


@dataclass
class Visit:
    page: Page
    seconds: float
    screenshot: Path
    missing: list[str] = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        if not self.missing:
            return None
        shown = ", ".join(repr(text) for text in self.missing)
        return f"{self.page.name} ({self.page.url}) does not show {shown}"


def chromium() -> webdriver.Chrome:
    """Headless Chromium with a 1280x800 viewport (the system's driver: selenium fetches
    nothing)."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in BROWSERS if shutil.which(n))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in containers
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    metrics = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


def visible_text(driver: webdriver.Chrome) -> str:
    """The page's rendered text, every run of whitespace (no-break spaces too) one space."""
    return " ".join(driver.execute_script("return document.body?.innerText ?? ''").split())


def visit(driver: webdriver.Chrome, page: Page, out_dir: Path, seconds: float) -> Visit:
    """Open `page`, wait up to `seconds` until every text shows, screenshot it (also when some
    text is missing: the picture says what the page showed instead)."""
    started = time.monotonic()
    driver.get(page.url)
    missing = list(page.texts)

    def shows_everything(driver: webdriver.Chrome) -> bool:
        close_panels(driver)
        text = visible_text(driver)
        missing[:] = [expected for expected in page.texts if expected not in text]
        return not missing

    try:
        WebDriverWait(driver, seconds, poll_frequency=0.5).until(shows_everything)
    except TimeoutException:
        pass
    if page.focus and page.focus not in missing:
        scroll_into_view(driver, page.focus)
    time.sleep(1.0)  # let images and charts that arrive after the text draw
    screenshot = save_screenshot(driver, out_dir / f"{page.name}.png")
    return Visit(page, time.monotonic() - started, screenshot, missing)


def close_panels(driver: webdriver.Chrome) -> None:
    for selector in CLOSE_BUTTONS:
        for button in driver.find_elements(By.CSS_SELECTOR, selector):
            try:  # a script's click: a popover over the button does not stop it
                driver.execute_script("arguments[0].click()", button)
            except WebDriverException:
                continue


def scroll_into_view(driver: webdriver.Chrome, text: str) -> None:
    """Scroll the innermost element showing `text` to the middle of its scroll containers."""
    literal = "concat('" + "', \"'\", '".join(text.split("'")) + "', '')"
    elements = driver.find_elements(By.XPATH, f"//*[contains(text(), {literal})]")
    if elements:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", elements[0])


def save_screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """The viewport as a 256-colour PNG (a fraction of Chromium's size, text still crisp)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
