"""The memory page in headless Chromium (driven over WebDriver by chromedriver): it lists a tenant's insights, and
a click on Quarantine withholds that insight from retrieval. Needs `apt-get install -y chromium chromium-driver`."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time

import httpx
import openai
import pytest
from guard_helpers import ADMIN, KEYS, MODEL, InProcess, free_port, upstream, user
from openai_stub import StubServer

from vlmeval_echosafe.serve.config import GuardConfig
from vlmeval_echosafe.serve.guard import Guard

ALICE = "sk-alice-0001"
BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# Chromium is a system package, not part of the pip install: .ci/run apt-installs it and says so in its log when the
# machine's package mirror cannot be reached; the skip then names the reason (pytest -ra), in CI as elsewhere.
pytestmark = pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="the memory page's browser test needs Chromium and chromedriver "
    "(apt-get install -y chromium chromium-driver)",
)


class Browser:
    """A headless Chromium session through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [DRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/status", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "chromedriver did not start"
                time.sleep(0.2)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,700"]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": BROWSER, "args": args}}
        session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{session['sessionId']}"

    def call(self, method: str, path: str, body: dict | None = None):
        reply = httpx.request(method, self.base + path, json=body, timeout=60)
        value = reply.json()["value"]
        assert reply.status_code == 200, value
        return value

    def go(self, url: str) -> None:
        self.call("POST", f"{self.session}/url", {"url": url})

    def find(self, css: str) -> list[str]:
        found = self.call("POST", f"{self.session}/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in found]  # {"element-6066-...": id}, the W3C element reference

    def wait(self, css: str, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while not (found := self.find(css)):
            assert time.monotonic() < deadline, f"nothing matches {css}"
            time.sleep(0.1)
        return found

    def type(self, element: str, text: str) -> None:
        self.call("POST", f"{self.session}/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self.call("POST", f"{self.session}/element/{element}/click", {})

    def attribute(self, element: str, name: str) -> str | None:
        return self.call("GET", f"{self.session}/element/{element}/attribute/{name}")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", f"{self.session}/screenshot"))

    def close(self) -> None:
        try:
            self.call("DELETE", self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(30)


def test_the_memory_page_lists_insights_and_quarantines_one(tmp_path):
    with StubServer(upstream(), full=True) as stub:
        config = GuardConfig(stub.base_url, MODEL, tmp_path / "work", KEYS, ADMIN)
        with InProcess(Guard(config)) as guard:
            c = openai.OpenAI(base_url=f"{guard.url}/v1", api_key=ALICE, max_retries=0)
            for topic in ("kites", "kites"):
                c.chat.completions.create(model=MODEL, messages=user(f"topic:{topic} how do I fly one?"))
            headers = {"Authorization": f"Bearer {ADMIN}"}
            deadline = time.monotonic() + 20
            while len(httpx.get(f"{guard.url}/admin/tenants/alice/insights", headers=headers).json()) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)

            browser = Browser()
            try:
                browser.go(f"{guard.url}/memory")
                browser.type(browser.wait("#token")[0], ADMIN)
                browser.click(browser.find("#load")[0])
                rows = browser.wait("tr[data-id]")
                assert len(rows) == 2
                shot = browser.screenshot()
                (tmp_path / "memory.png").write_bytes(shot)
                assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000
                target = int(browser.attribute(rows[0], "data-id"))
                browser.click(browser.find("tr[data-id] button.quarantine")[0])
                browser.wait("tr.quarantined")
            finally:
                browser.close()

            listed = {
                r["id"]: r for r in httpx.get(f"{guard.url}/admin/tenants/alice/insights", headers=headers).json()
            }
            assert listed[target]["quarantined"] and not listed[1 - target]["quarantined"]
            raw = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=user("topic:kites how do I fly one?")
            )
            assert raw.headers["x-echosafe-insights"] == str(1 - target)  # the quarantined one is never retrieved
