"""The web dashboard (``python -m web_svc``) as a local process, and a headless Chromium to drive it.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (.ci/run installs both), driven by
Selenium: nothing is downloaded at run time.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.processes import ServiceProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class WebProcess(ServiceProcess):
    """``python -m web_svc`` on a free port; ``url`` is where it serves."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        port = free_port()
        super().__init__("web_svc", {"WEB_HOST": "127.0.0.1", "WEB_PORT": str(port), **env}, log_path)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until /healthz answers 200; fail with the service's log if it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"web_svc exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as reply:  # noqa: S310 - http://127.0.0.1
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"web_svc did not answer /healthz after {timeout} s:\n{self.output()}")


@contextmanager
def start_web(env: Mapping[str, str], log_path: Path) -> Iterator[WebProcess]:
    """The dashboard, ready; stopped (SIGTERM) on leaving, which must exit 0."""
    web = WebProcess(env, log_path)
    try:
        web.wait_ready()
        yield web
    finally:
        code = web.stop()
    assert code == 0, f"web_svc exited with {code}:\n{web.output()}"


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless Chromium under Selenium, quit on leaving."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
