"""The console in a real browser: Debian's headless Chromium driven by Selenium (few, fast tests).

The gateway runs in this test's event loop, so every Selenium call (blocking) runs in a worker thread.
With WARDGATE_SCREENSHOTS=DIR set, the session page and the replay player are saved there as PNGs
(that is how the README's pictures are made).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import pytest_asyncio
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import ApprovalDecided
from storage.reader import iter_frames
from tests.gateway.console.conftest import AGENT_KEY, APPROVER_KEY, AUDITOR_KEY, Console

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
WAIT_S = 15
XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
ANSWER = " ".join(f"tok{i}" for i in range(12))
T = TypeVar("T")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mock_llm() -> AsyncIterator[MockLlm]:
    """Tokens 60 ms apart, so that the replay has a pace to keep."""
    async with MockLlm(MockLlmConfig(tokens=12, token_delay_ms=60)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (`make test` installs them)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="wardgate-chromium-") as profile:
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


async def in_thread(step: Callable[[], T]) -> T:
    """Selenium blocks; the gateway it talks to runs on this loop."""
    return await asyncio.wait_for(asyncio.to_thread(step), timeout=60)


def wait_for(driver: WebDriver, css: str) -> WebElement:
    locator = (By.CSS_SELECTOR, css)
    element: WebElement = WebDriverWait(driver, WAIT_S).until(
        expected_conditions.visibility_of_element_located(locator)
    )
    return element


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("WARDGATE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def log_in(driver: WebDriver, base: str) -> None:
    driver.get(base + "/")
    wait_for(driver, "#token").send_keys(AUDITOR_KEY)
    driver.find_element(By.ID, "login").click()
    wait_for(driver, "#filters")
    assert "alice-auditor" in driver.find_element(By.ID, "whoami").text


def find_and_open(driver: WebDriver, word: str, session: str) -> None:
    box = driver.find_element(By.ID, "q-text")
    box.clear()
    box.send_keys(word)
    driver.find_element(By.ID, "search").click()
    wait_for(driver, f'a.session-link[href="#/session/{session}"]').click()
    wait_for(driver, "#session-id")


def replay_snapshots(driver: WebDriver) -> list[str]:
    """Press play at normal speed and note the screen's text each time it changes, until it stops."""
    wait_for(driver, "#play").click()
    seen = [""]
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        text = driver.find_element(By.ID, "replay-text").get_attribute("textContent") or ""
        if text != seen[-1]:
            seen.append(text)
            if len(seen) == 8:
                screenshot(driver, "console-replay.png")  # mid-play: part of the answer, the timeline
        if text == ANSWER and "Play" in driver.find_element(By.ID, "play").text:
            break
        time.sleep(0.01)
    return seen


async def test_log_in_find_open_and_replay(console: Console, browser: WebDriver) -> None:
    exchange = await console.chat(
        "s-browser", "needle: explain [MASKED:openai_api_key] rotation", stream=True
    )
    await console.indexed(exchange)
    base = str(console.admin.base_url).rstrip("/")
    await in_thread(lambda: log_in(browser, base))
    await in_thread(lambda: find_and_open(browser, "needle", "s-browser"))

    def session_card() -> tuple[str, list[str]]:
        card = wait_for(browser, f"#x-{exchange}")
        return card.text, [m.text for m in card.find_elements(By.CSS_SELECTOR, ".masked")]

    text, masked = await in_thread(session_card)
    assert "explain [MASKED:openai_api_key] rotation" in text
    assert ANSWER in text
    assert "dave-developer via api-key · groups developers" in text  # who made the exchange
    assert masked == ["[MASKED:openai_api_key]"]
    await in_thread(lambda: screenshot(browser, "console-session.png"))

    def open_replay() -> int:
        browser.find_element(By.CSS_SELECTOR, f"#x-{exchange} .replay-link").click()
        wait_for(browser, "#timeline")
        return len(browser.find_elements(By.CSS_SELECTOR, ".tick"))

    assert await in_thread(open_replay) >= 4  # a tick per recorded chunk that grew the answer (12 tokens)
    snapshots = await in_thread(lambda: replay_snapshots(browser))
    assert snapshots[-1] == ANSWER
    # Streamed in order: every snapshot extends the one before, and the text arrived in several steps.
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(snapshots))
    assert len(snapshots) >= 4
    # Every look was recorded with the auditor's identity, and the audit trail page shows it.
    actions = [(a.action, a.target) for a in console.audit_frames()]
    assert ("view_session", "s-browser") in actions
    assert ("replay", exchange) in actions

    def audit_rows() -> list[str]:
        browser.get(base + "/#/audit?target=s-browser")
        wait_for(browser, "#audit tr")
        return [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#audit tr")]

    [row] = await in_thread(audit_rows)
    assert "alice-auditor view_session s-browser" in row


async def test_a_prompt_with_script_renders_as_text(console: Console, browser: WebDriver) -> None:
    exchange = await console.chat("s-xss", "hostile " + XSS)
    await console.indexed(exchange)
    base = str(console.admin.base_url).rstrip("/")

    def open_it() -> tuple[str, str, int, int]:
        browser.get(base + "/#/sessions")
        wait_for(browser, "#filters")
        find_and_open(browser, "hostile", "s-xss")
        card = wait_for(browser, f"#x-{exchange}")
        scripts = len(browser.find_elements(By.CSS_SELECTOR, "#view script"))
        images = len(browser.find_elements(By.CSS_SELECTOR, "#view img"))
        return card.text, browser.title, scripts, images

    text, title, scripts, images = await in_thread(open_it)
    assert "hostile " + XSS in text  # shown literally, as text
    assert title == "wardgate console"
    assert (scripts, images) == (0, 0)


def log_in_as(driver: WebDriver, base: str, key: str, who: str) -> None:
    driver.get(base + "/#/login")
    box = wait_for(driver, "#token")
    box.clear()
    box.send_keys(key)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: who in d.find_element(By.ID, "whoami").text)


SHELL: Any = {
    "type": "function",
    "function": {
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "enum": ["rm -rf dist/"]}},
        },
    },
}


async def agent_request(console: Console) -> tuple[str, str]:
    """The agent's streamed chat, held until someone decides; returns (tool call, finish reason)."""
    llm = openai.AsyncOpenAI(
        base_url=f"{str(console.proxy.base_url).rstrip('/')}/v1",
        api_key=AGENT_KEY,
        max_retries=0,
        timeout=60,
        default_headers={"X-Wardgate-Session": "s-agent"},
    )
    called, finish = "", ""
    async with llm:
        stream = await llm.chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "tidy up " + XSS + ", call a tool"}],
            tools=[SHELL],
            stream=True,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    if call.function is not None:
                        called += (call.function.name or "") + (call.function.arguments or "")
                finish = choice.finish_reason or finish
    return called, finish


async def test_approve_a_held_tool_call(console: Console, browser: WebDriver) -> None:
    base = str(console.admin.base_url).rstrip("/")
    async with asyncio.TaskGroup() as tasks:
        agent = tasks.create_task(agent_request(console))
        async with asyncio.timeout(20):
            while not (pending := console.gateway.holds.pending()):  # noqa: ASYNC110 - nothing to wait on
                await asyncio.sleep(0.05)
        [hold] = pending
        # An approver (not an auditor) lands on the approvals queue.
        await in_thread(lambda: log_in_as(browser, base, APPROVER_KEY, "erin-approver"))

        def the_card() -> tuple[str, str, int, int]:
            card = wait_for(browser, f"#hold-{hold.hold_id}")
            scripts = len(browser.find_elements(By.CSS_SELECTOR, "#view script"))
            images = len(browser.find_elements(By.CSS_SELECTOR, "#view img"))
            return card.text, browser.current_url, scripts, images

        text, url, scripts, images = await in_thread(the_card)
        assert url.endswith("#/approvals")
        assert "tidy up " + XSS + ", call a tool" in text  # the conversation, as text
        assert 'shell({"command":"rm -rf dist/"})' in text
        assert "andy-agent via api-key · groups developers, agents" in text
        assert (scripts, images, browser.title) == (0, 0, "wardgate console")
        assert not agent.done()  # the agent waits
        await in_thread(lambda: screenshot(browser, "console-approvals.png"))

        def approve() -> str:
            card = browser.find_element(By.ID, f"hold-{hold.hold_id}")
            card.find_element(By.CSS_SELECTOR, "textarea.comment").send_keys("read it, fine")
            card.find_element(By.CSS_SELECTOR, "button.approve").click()
            status = wait_for(browser, f"#hold-{hold.hold_id} .decision-status.ok")
            return status.text

        assert await in_thread(approve) == "Approved: the agent receives this call."
        # The agent's request completes with the call it was held for.
        assert await asyncio.wait_for(agent, timeout=20) == ('shell{"command":"rm -rf dist/"}', "tool_calls")
    frame = console.audit_frames()[-1]
    assert (frame.action, frame.target, frame.identity.subject) == ("approve", hold.hold_id, "erin-approver")
    decided = [
        s.frame.event
        for s in iter_frames(console.data_dir)
        if isinstance(s.frame.event, ApprovalDecided) and s.frame.event.hold_id == hold.hold_id
    ]
    assert [(d.verdict, d.approver.subject, d.comment) for d in decided] == [
        ("approved", "erin-approver", "read it, fine")
    ]
    await in_thread(lambda: log_in_as(browser, base, AUDITOR_KEY, "alice-auditor"))
