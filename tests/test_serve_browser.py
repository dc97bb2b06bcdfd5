"""The web chat page of `python -m ms_gpt.serve` in a real headless browser (the system's Chromium driven by
Playwright): type a message, see the reply stream in, chat a second turn with the history, reset.

Needs Chromium from the system packages (`apt-get install chromium fonts-wqy-zenhei`) and `pip install playwright`
(no browser download: the system's Chromium is launched). Without them this test is skipped with that reason on a
laptop, and FAILS in CI (CI=true), where `.ci/run` installs Chromium first.
"""
import os
import shutil

import pytest

from serve_process import ServerProcess, http_post, make_model_dir

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
HOW = ("the browser test needs Chromium and Playwright: `sudo apt-get install chromium fonts-wqy-zenhei` and "
       "`pip install playwright`, then `pytest tests/test_serve_browser.py`")


def _missing():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if shutil.which("chromium") is None:
        return "chromium is not on PATH"
    return None


@pytest.fixture(scope="module")
def chromium():
    missing = _missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser test: {missing}. {HOW}")
        pytest.skip(f"{missing}; {HOW}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = make_model_dir(str(tmp_path_factory.mktemp("browser_model")), n_positions=128)
    with ServerProcess(model_dir, log_dir=str(tmp_path_factory.mktemp("browser_logs"))) as proc:
        yield proc


def api_reply(server, turns: list, max_tokens: int = 24) -> str:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    status, body = http_post(server.url + "/v1/chat/completions",
                             {"messages": messages, "max_tokens": max_tokens, "temperature": 0})
    assert status == 200, body
    return body["choices"][0]["message"]["content"]


def test_chat_page_streams_replies_keeps_history_and_resets(chromium, server):
    # a first message whose greedy reply has several tokens (a random tiny model may end a reply at once)
    first = next(m for m in ("你好", "今天天气怎么样", "我们聊聊天吧", "早上好") if len(api_reply(server, [m])) >= 3)
    reply1 = api_reply(server, [first])
    page = chromium.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelector('[data-testid=model]').textContent !== '…'")
        page.fill("#max_tokens", "24")
        # record every text the reply bubble shows while it streams
        page.evaluate("""() => {
            window.__seen = [];
            new MutationObserver(() => {
                const bubbles = document.querySelectorAll('.msg.assistant');
                if (bubbles.length) window.__seen.push(bubbles[bubbles.length - 1].textContent);
            }).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
        }""")
        page.fill("[data-testid=input]", first)
        page.press("[data-testid=input]", "Enter")
        page.wait_for_selector(".msg.assistant[data-done=true]", timeout=60000)
        bubbles = page.query_selector_all(".msg")
        assert [b.get_attribute("data-role") for b in bubbles] == ["user", "assistant"]
        assert bubbles[0].text_content() == first
        assert bubbles[1].text_content() == reply1
        seen = [s for s in page.evaluate("window.__seen") if s]
        assert len(set(seen)) >= 2 and all(reply1.startswith(s) for s in seen), seen  # arrived in pieces

        # a second turn is answered with the whole conversation as context
        second = "然后呢"
        reply2 = api_reply(server, [first, reply1, second])
        page.fill("[data-testid=input]", second)
        page.click("[data-testid=send]")
        page.wait_for_function("document.querySelectorAll('.msg.assistant[data-done=true]').length === 2",
                               timeout=60000)
        assert [b.text_content() for b in page.query_selector_all(".msg")] == [first, reply1, second, reply2]

        # reset forgets the conversation: the same message gets the first reply again
        page.click("[data-testid=reset]")
        assert page.query_selector_all(".msg") == []
        page.fill("[data-testid=input]", first)
        page.press("[data-testid=input]", "Enter")
        page.wait_for_selector(".msg.assistant[data-done=true]", timeout=60000)
        assert [b.text_content() for b in page.query_selector_all(".msg")] == [first, reply1]
    finally:
        page.close()
