"""The web dashboard under compose: healthy, its login page served, and a login reaching auth over the network."""

from __future__ import annotations

import re
import uuid

import aiohttp
import pytest

from jobqueue.client import connect_auth
from tests.compose.stack import Stack

pytestmark = pytest.mark.timeout(1800)
PASSWORD = "correct horse battery"


async def test_the_dashboard_serves_and_logs_in(stack: Stack) -> None:
    assert stack.health_check("web-service") == 0
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async with connect_auth(stack.address("auth-service")) as auth:
        await auth.register(email, PASSWORD, "Compose Test")
    url = f"http://{stack.address('web-service')}"
    async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        assert (await http.get("/healthz")).status == 200
        page = await http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert token is not None
        # Through auth-service (Login) and job-service (ListJobTypes, ListJobs) by their compose names.
        jobs = await http.post("/login", data={"email": email, "password": PASSWORD, "csrf": token[1]})
        assert jobs.status == 200
        assert str(jobs.url).endswith("/jobs")
        body = await jobs.text()
        assert email in body
        assert "reverse_string" in body
