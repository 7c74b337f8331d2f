"""The web dashboard end to end: a real browser (headless Chromium) on web_svc, on the real services.

Auth, jobs and a worker running the demo job types (``sleep``, ``fail``) are the
real entry points; the dashboard is ``python -m web_svc``; the browser is
Debian's Chromium driven by Selenium. The browser test saves the screenshots
that docs/dashboard.md shows (docs/screenshots/*.png) when UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from jobqueue.client import JobStatus, connect_auth, connect_jobs
from tests.support.processes import ROOT
from tests.support.system import System
from tests.support.web import WebProcess, chromium, start_web

PASSWORD = "correct horse battery"
#: Where the browser test saves its screenshots: docs/screenshots with UPDATE_SCREENSHOTS=1 (to refresh
#: the ones docs/dashboard.md shows), else a temporary folder, so a test run changes no tracked file.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="dashboard-screenshots-"))
)
#: Seconds the browser waits for something the services do (a job finishing, a page loading).
PATIENCE = 45


@pytest.fixture
def dashboard(system: System, tmp_path: Path) -> Iterator[WebProcess]:
    """The system with one worker running the demo types, and the dashboard in front of it."""
    system.start_worker(DEMO_JOB_TYPES="true")
    env = {
        **system.env,
        "AUTH_SERVICE_ADDR": system.auth_address,
        "JOB_SERVICE_ADDR": system.job_address,
    }
    with start_web(env, tmp_path / "web_svc.log") as web:
        yield web


async def _register(system: System, email: str) -> None:
    async with connect_auth(system.auth_address) as auth:
        await auth.register(email, PASSWORD, email.split("@", maxsplit=1)[0])


def _grant_operator(system: System, email: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auth_svc.admin", "grant-operator", email],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _wait(driver: WebDriver, what: str, condition: object) -> None:
    try:
        WebDriverWait(driver, PATIENCE, poll_frequency=0.2).until(condition)  # type: ignore[arg-type]
    except Exception as error:
        raise AssertionError(f"{what}; the page shows:\n{driver.find_element(By.TAG_NAME, 'main').text}") from error


def _log_in(driver: WebDriver, web: WebProcess, email: str, *, screenshot: str = "") -> None:
    driver.get(f"{web.url}/login")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    if screenshot:
        driver.save_screenshot(str(SCREENSHOTS / screenshot))
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    _wait(driver, "login did not lead to the jobs page", lambda d: d.current_url.endswith("/jobs"))


def _submit(driver: WebDriver, job_type: str, payload: str, *, attempts: int = 0) -> str:
    """Submit a job with the form on /jobs; returns its id (the form leads to the job's page)."""
    form = driver.find_element(By.ID, "submit")
    Select(form.find_element(By.NAME, "type")).select_by_value(job_type)
    form.find_element(By.NAME, "payload").send_keys(payload)
    if attempts:
        field = form.find_element(By.NAME, "max_attempts")
        field.clear()
        field.send_keys(str(attempts))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(
        driver, "submitting did not lead to the job's page", lambda d: re.search(r"/jobs/[0-9a-f-]{36}$", d.current_url)
    )
    return driver.current_url.rsplit("/", 1)[1]


def _row_status(driver: WebDriver, job_id: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#jobs tr[data-id='{job_id}'] .status")
    return rows[0].text if rows else ""


def _outcomes(driver: WebDriver) -> list[str]:
    """The outcome of each attempt the job's page shows, oldest first."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#attempts tr")
    return [row.find_elements(By.TAG_NAME, "td")[4].text for row in rows]


def _status(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "[data-field=status]").text)


def test_dashboard_in_a_browser(system: System, dashboard: WebProcess) -> None:
    """Log in, submit, watch a job complete live, read its attempts, cancel one, and re-run a dead one as operator."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    asyncio.run(_register(system, "ada@example.com"))
    with chromium() as driver:
        _log_in(driver, dashboard, "ada@example.com", screenshot="login.png")
        assert "ada@example.com" in driver.find_element(By.TAG_NAME, "header").text

        # A job submitted through the form turns COMPLETED on the list without the page being reloaded.
        slow = _submit(driver, "sleep", "2")
        driver.get(f"{dashboard.url}/jobs")
        _wait(driver, "the list's live updates never began", lambda d: d.find_element(By.ID, "live").text == "live")
        driver.execute_script("window.notReloaded = true")
        assert _row_status(driver, slow) in ("QUEUED", "RUNNING")
        _wait(driver, "the job never showed COMPLETED", lambda d: _row_status(d, slow) == "COMPLETED")
        assert driver.execute_script("return window.notReloaded") is True, "the page was reloaded"
        # One submitted elsewhere (the client library) appears at the top by itself.
        other = asyncio.run(_submit_elsewhere(system, "ada@example.com"))
        _wait(driver, "a job submitted elsewhere never appeared", lambda d: _row_status(d, other) == "COMPLETED")
        driver.save_screenshot(str(SCREENSHOTS / "jobs.png"))

        # Its page: every attempt, with the worker that ran it.
        driver.find_element(By.CSS_SELECTOR, f"#jobs tr[data-id='{slow}'] a").click()
        _wait(driver, "the job's page never opened", lambda d: d.current_url.endswith(f"/jobs/{slow}"))
        attempts = driver.find_elements(By.CSS_SELECTOR, "#attempts tr")
        assert len(attempts) == 1
        cells = [cell.text for cell in attempts[0].find_elements(By.TAG_NAME, "td")]
        assert (cells[0], cells[4]) == ("1", "COMPLETED"), cells
        assert cells[1], "the attempt names no worker"
        assert _status(driver) == "COMPLETED"
        assert "slept 2 s" in driver.find_element(By.CSS_SELECTOR, "[data-field=result]").text

        # A long job: its page follows it to RUNNING by itself; cancelling it stops it.
        driver.get(f"{dashboard.url}/jobs")
        long = _submit(driver, "sleep", "120")
        _wait(driver, "the long job never showed RUNNING", lambda d: _status(d) == "RUNNING")
        # Its attempt arrives with it (WatchJob's JOB_VIEW_FULL carries the attempt history).
        _wait(driver, "the running attempt never showed", lambda d: _outcomes(d) == ["RUNNING"])
        driver.save_screenshot(str(SCREENSHOTS / "job-running.png"))
        driver.find_element(By.CSS_SELECTOR, "#actions button.cancel").click()
        _wait(driver, "cancelling did not show CANCELLED", lambda d: _status(d) == "CANCELLED")
        assert _outcomes(driver) == ["CANCELLED"]
        assert f"Cancelled job {long}" in driver.find_element(By.CSS_SELECTOR, ".flash.ok").text
        assert driver.find_elements(By.CSS_SELECTOR, "#actions button") == []

        # A job that dies: one attempt, which fails.
        driver.get(f"{dashboard.url}/jobs")
        doomed = _submit(driver, "fail", "1", attempts=1)
        _wait(driver, "the doomed job never showed FAILED", lambda d: _status(d) == "FAILED")
        assert (
            "DemoFailure: attempt 1 fails on purpose" in driver.find_element(By.CSS_SELECTOR, "[data-field=error]").text
        )
        driver.save_screenshot(str(SCREENSHOTS / "job-failed.png"))

        # Without the operator role the operator page says so, in words.
        driver.get(f"{dashboard.url}/ops")
        assert "Operators only" in driver.find_element(By.TAG_NAME, "main").text
        assert driver.find_elements(By.LINK_TEXT, "Operators") == []

        # The role comes with the next login: then the dead job is listed, and re-running it completes it.
        _grant_operator(system, "ada@example.com")
        driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
        _wait(driver, "logging out did not lead to the login page", lambda d: d.current_url.endswith("/login"))
        _log_in(driver, dashboard, "ada@example.com")
        driver.find_element(By.LINK_TEXT, "Operators").click()
        _wait(driver, "the operator page never opened", lambda d: d.current_url.endswith("/ops"))
        assert driver.find_elements(By.CSS_SELECTOR, f"#dead tr[data-id='{doomed}']"), "the dead job is not listed"
        assert len(driver.find_elements(By.CSS_SELECTOR, ".chart svg polyline")) >= 3
        driver.set_window_size(1400, 1300)  # the charts and the dead jobs in one picture
        driver.save_screenshot(str(SCREENSHOTS / "operators.png"))
        driver.set_window_size(1400, 900)
        driver.find_element(By.CSS_SELECTOR, f"#dead tr[data-id='{doomed}'] button.rerun").click()
        _wait(driver, "re-running said nothing", lambda d: d.find_elements(By.CSS_SELECTOR, ".flash.ok"))
        assert f"Job {doomed} is queued again" in driver.find_element(By.CSS_SELECTOR, ".flash.ok").text
        driver.get(f"{dashboard.url}/jobs/{doomed}")
        _wait(driver, "the re-run job never completed", lambda d: _status(d) == "COMPLETED")
        assert _outcomes(driver) == ["FAILED", "COMPLETED"]
        driver.save_screenshot(str(SCREENSHOTS / "job-rerun.png"))

        # The API reference is one click away.
        driver.find_element(By.LINK_TEXT, "API reference").click()
        _wait(driver, "the API reference never opened", lambda d: d.current_url.endswith("/docs/api"))


async def _submit_elsewhere(system: System, email: str) -> str:
    async with connect_auth(system.auth_address) as auth:
        token = await auth.login(email, PASSWORD)
    async with connect_jobs(system.job_address, token=token) as jobs:
        job = await jobs.submit("fail", 0)
        assert (await jobs.wait(job.id, timeout=30)).status == JobStatus.COMPLETED
        return job.id


async def test_sessions_and_forms_are_safe(system: System, dashboard: WebProcess) -> None:
    """The token stays on the server; cookies are HttpOnly and SameSite=Strict; forms need their CSRF token."""
    await _register(system, "bob@example.com")
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: the dashboard is at an IP address
    async with aiohttp.ClientSession(dashboard.url, cookie_jar=jar) as http:
        page = await http.get("/login")
        assert page.status == 200
        for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
            assert header in page.headers
        form_token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert form_token is not None
        login_cookie = page.headers["Set-Cookie"]
        assert "HttpOnly" in login_cookie
        assert "SameSite=Strict" in login_cookie

        # A login form that did not come from the dashboard (no or a wrong token) is refused.
        refused = await http.post("/login", data={"email": "bob@example.com", "password": PASSWORD, "csrf": "x" * 64})
        assert refused.status == 401
        assert "expired" in await refused.text()
        wrong = await http.post(
            "/login", data={"email": "bob@example.com", "password": "wrong password", "csrf": form_token[1]}
        )
        assert wrong.status == 401
        assert "Wrong email or password" in await wrong.text()

        logged_in = await http.post(
            "/login",
            data={"email": "bob@example.com", "password": PASSWORD, "csrf": form_token[1]},
            allow_redirects=False,
        )
        assert logged_in.status == 303
        assert logged_in.headers["Location"] == "/jobs"
        session_cookie = next(c for c in logged_in.headers.getall("Set-Cookie") if c.startswith("jq_session="))
        assert "HttpOnly" in session_cookie
        assert "SameSite=Strict" in session_cookie
        assert "Secure" not in session_cookie  # plain HTTP here: Secure comes with TLS or COOKIE_SECURE
        jobs_page = await http.get("/jobs")
        body = await jobs_page.text()
        assert jobs_page.headers["Cache-Control"] == "no-store"
        # The access token (a JWT: three base64url parts, the first {"alg"...}) is nowhere on the page.
        assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", body + " ".join(cookie.value for cookie in jar))
        csrf = re.search(r'name="csrf" value="([^"]+)"', body)
        assert csrf is not None

        submit = {"type": "fail", "payload": "0", "priority": "NORMAL", "max_attempts": "0"}
        without = await http.post("/jobs", data=submit, allow_redirects=False)
        assert without.status == 403
        cross_site = await http.post(
            "/jobs", data={**submit, "csrf": csrf[1]}, headers={"Origin": "https://evil.example"}, allow_redirects=False
        )
        assert cross_site.status == 403
        # Its own host is not cross-site, whichever scheme the browser saw (a TLS proxy in front says https).
        proxied = dashboard.url.replace("http://", "https://")
        behind_proxy = await http.post(
            "/jobs", data={**submit, "csrf": csrf[1]}, headers={"Origin": proxied}, allow_redirects=False
        )
        assert behind_proxy.status == 303
        accepted = await http.post("/jobs", data={**submit, "csrf": csrf[1]}, allow_redirects=False)
        assert accepted.status == 303
        assert re.fullmatch(r"/jobs/[0-9a-f-]{36}", accepted.headers["Location"])

        # A payload its type refuses is said in words, on the page the form returns to.
        shown = await (await http.post("/jobs", data={**submit, "payload": '"x"', "csrf": csrf[1]})).text()
        assert "Not submitted" in shown, shown
        assert "payload" in shown

        logout = await http.post("/logout", data={"csrf": csrf[1]}, allow_redirects=False)
        assert logout.status == 303
        after = await http.get("/jobs", allow_redirects=False)
        assert after.status == 303
        assert after.headers["Location"] == "/login"


async def test_live_streams_are_bounded(system: System, dashboard: WebProcess) -> None:
    """A session may hold STREAMS_PER_SESSION (4) event streams; the next is refused with 429."""
    await _register(system, "carol@example.com")
    async with aiohttp.ClientSession(dashboard.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert token is not None
        await http.post("/login", data={"email": "carol@example.com", "password": PASSWORD, "csrf": token[1]})
        streams = [await http.get("/events/jobs") for _ in range(4)]
        try:
            assert [s.status for s in streams] == [200] * 4
            assert all(s.headers["Content-Type"] == "text/event-stream" for s in streams)
            for stream in streams:  # each watch has begun: the streams are open, not refused
                assert b"event: ready" in await asyncio.wait_for(stream.content.readuntil(b"event: ready"), 10)
            refused = await http.get("/events/jobs")
            assert refused.status == 429
        finally:
            for stream in streams:
                stream.close()
        # A stream the browser closed frees its place as soon as the dashboard sees the connection close.
        for _ in range(50):
            again = await http.get("/events/jobs")
            again.close()
            if again.status == 200:
                break
            await asyncio.sleep(0.1)
        assert again.status == 200
