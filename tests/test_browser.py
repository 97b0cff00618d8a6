"""The browser page (``web/``, ``transport/web_ui.py``).

Over plain HTTP: served only with ``STT_WEB_UI=true``, under a strict Content-Security-Policy,
with the right content types, and ``/web/check`` explaining refusals. In a real browser:
Debian's Chromium (installed by ``.ci/run``), headless, driven by Selenium with the driver and
the browser given explicitly (Selenium Manager never runs, so nothing is downloaded and no
statistics are sent), with a fake microphone that plays a ``references/`` clip. The page's
transcript must hold the clip's words, from the microphone and from a chosen file; a full
server, a refused microphone, a missing token and an undecodable file must each read as a
clear message.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import httpx
import pytest

from config import REPO_ROOT
from tests.server import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_BROWSER = (CHROMIUM.exists() and CHROMEDRIVER.exists()
                and importlib.util.find_spec("selenium") is not None)
if not HAVE_BROWSER and os.environ.get("STT_REQUIRE_BROWSER"):
    raise RuntimeError("chromium, chromium-driver and selenium are required here "
                       "(.ci/run installs Debian's packages, the test extra selenium)")
needs_browser = pytest.mark.skipif(not HAVE_BROWSER, reason="chromium/chromedriver/selenium "
                                   "not installed")

CLIP = REPO_ROOT / "references" / "fw_jfk.wav"  # "And so my fellow Americans, ask not …"
KEY_WORDS = ("fellow america", "country")  # tiny.en writes "americans" in either case
ASSET_TYPES = {"app.js": "text/javascript", "audio.js": "text/javascript",
               "session.js": "text/javascript", "transcript.js": "text/javascript",
               "worklet.js": "text/javascript", "style.css": "text/css"}
WINDOW = (1000, 800)
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "img" / "web-ui.png"


# --- over HTTP, no browser -------------------------------------------------------------------

def test_page_is_not_served_unless_enabled(start_server):
    server = start_server()
    for path in ("/", "/web/app.js", "/web/config.json"):
        assert server.get(path)[0] == 404, path


def test_page_and_assets_under_a_strict_csp(start_server):
    server = start_server(web_ui=True)
    page = httpx.get(server.http + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self' ws: wss:" in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "http" not in csp and "unsafe" not in csp  # no other origin, no inline code
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'src="/web/app.js"' in page.text and "<script>" not in page.text
    assert httpx.head(server.http + "/").status_code == 200
    for name, media_type in ASSET_TYPES.items():
        r = httpx.get(f"{server.http}/web/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(media_type), name
        assert "content-security-policy" in r.headers, name  # the worklet runs under it too
    for path in ("/web/nothing.js", "/web/index.html%2F..%2F..%2Fconfig.py", "/web/..%2Fapp.py"):
        assert httpx.get(server.http + path).status_code == 404, path


def test_config_says_when_a_token_is_needed(start_server):
    open_server = start_server(web_ui=True)
    assert httpx.get(open_server.http + "/web/config.json").json()["auth_required"] is False
    secured = start_server(web_ui=True, auth_tokens="s3cret")
    config = httpx.get(secured.http + "/web/config.json").json()
    assert config["auth_required"] is True and config["backend"] == "mock"
    assert "s3cret" not in str(config)


def test_check_explains_what_the_handshake_would_refuse(start_server):
    server = start_server(web_ui=True, auth_tokens="s3cret", max_sessions=1)

    def check(**query) -> dict:
        query = {"call_id": "c", "sample_rate": 16000, **query}
        return httpx.get(server.http + "/web/check", params=query).json()

    assert check()["code"] == "unauthorized"
    assert check(token="wrong")["code"] == "unauthorized"
    assert check(token="s3cret") == {"status": 200, "code": "ok",
                                     "message": "the server would accept this session"}
    refused = check(token="s3cret", vad_silence_ms=5)
    assert refused["code"] == "bad_request" and "vad_silence_ms" in refused["message"]
    from websockets.sync.client import connect

    with connect(server.ws_url(token="s3cret")) as ws:
        ws.recv(timeout=10)  # ready: the only slot is taken
        assert check(token="s3cret")["code"] == "capacity"
    # /web/check counts no refusals: only the real handshakes are in the metrics
    assert server.metrics().get('stt_rejections_total{reason="unauthorized"}', 0) == 0


# --- in Chromium -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium(pytestconfig):
    """Launches headless Chromiums: ``chromium(microphone=CLIP)`` gets a fake microphone
    playing that WAV (looped) and grants it; ``microphone=None`` refuses every prompt."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    os.environ["SE_AVOID_STATS"] = "true"
    drivers = []

    def never(*args, **kwargs):
        raise AssertionError("Selenium Manager must not run (it downloads drivers)")

    def launch(microphone: Path | None = CLIP):
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        args = ["--headless=new", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--use-fake-device-for-media-stream", "--disable-dev-shm-usage",
                # Nothing leaves loopback: no name resolves, no background services start.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        if microphone is None:
            args.append("--deny-permission-prompts")
        else:
            args += ["--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-audio-capture={microphone}"]
        for arg in args:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SeleniumManager, "binary_paths", never)
            driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                      options=options)
        if not drivers:
            caps = driver.capabilities
            chromedriver = caps["chrome"]["chromedriverVersion"].split()[0]
            report(pytestconfig, f"Chromium {caps['browserVersion']}, chromedriver {chromedriver}")
        drivers.append(driver)
        return driver

    yield launch
    for driver in drivers:
        driver.quit()


@pytest.fixture(scope="module")
def whisper_ui():
    """sttd with the product defaults (Whisper tiny.en, Silero VAD) and the page on."""
    server = RunningServer(backend="whisper", vad="silero", web_ui=True)
    server.start()
    yield server
    server.stop()


def report(config, line: str) -> None:
    """A line in the test output even when output is captured (-q, passing tests)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"test_browser: {line}")


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def state(driver) -> str:
    return driver.find_element("id", "app").get_attribute("data-state")


def wait_until(driver, predicate, timeout: float = 60.0, what: str = "") -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: predicate(), message=f"{what}; status: {text_of(driver, 'status')!r}, "
        f"alert: {text_of(driver, 'alert')!r}, finals: {text_of(driver, 'finals')!r}")


def open_page(driver, server: RunningServer) -> None:
    driver.get(server.http + "/")
    wait_until(driver, lambda: "·" in text_of(driver, "model"), 10, "config loaded")


def has_key_words(text: str) -> bool:
    return all(word in text.lower() for word in KEY_WORDS)


def page_errors(driver) -> list[str]:
    """Console errors other than the handshake refusals a test provokes on purpose."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "WebSocket handshake" not in e["message"]]


@pytest.fixture(scope="module")
def microphone_run(chromium, whisper_ui, tmp_path_factory):
    """One microphone session: start, wait for the clip's words, screenshot, stop."""
    from selenium.common.exceptions import TimeoutException

    driver = chromium(microphone=CLIP)
    open_page(driver, whisper_ui)
    # Record whether partials ever showed settled (dark) and provisional (grey) words.
    driver.execute_script("""
        window.seen = {stable: false, unstable: false};
        new MutationObserver(() => {
          const p = document.getElementById("partial");
          seen.stable ||= p.querySelector(".stable").textContent.length > 0;
          seen.unstable ||= p.querySelector(".unstable").textContent.length > 0;
        }).observe(document.getElementById("partial"), {subtree: true, childList: true,
                                                        characterData: true});""")
    started = time.monotonic()
    driver.find_element("id", "start").click()
    wait_until(driver, lambda: has_key_words(text_of(driver, "finals")), 60,
               "the clip's words in the finals")
    heard_s = time.monotonic() - started
    try:  # for the picture: the next phrase live, settled words dark and the rest grey
        wait_until(driver, lambda: len(text_of(driver, "partial")) > 20, 8, "a long partial")
    except TimeoutException:
        pass
    shot = tmp_path_factory.mktemp("browser") / "web-ui.png"
    driver.save_screenshot(str(shot))
    driver.find_element("id", "stop").click()
    wait_until(driver, lambda: state(driver) == "idle", 30, "the session closed")
    return {"finals": text_of(driver, "finals"), "status": text_of(driver, "status"),
            "first": text_of(driver, "lat-first"), "final": text_of(driver, "lat-final"),
            "server": text_of(driver, "lat-server"), "seen": driver.execute_script("return seen"),
            "errors": page_errors(driver), "screenshot": shot, "heard_s": heard_s}


@needs_browser
def test_microphone_transcript(microphone_run, pytestconfig):
    run = microphone_run
    assert has_key_words(run["finals"])
    assert run["status"] == "Done."
    assert run["errors"] == []  # no CSP violation, no script error
    # Every final is timed; latency cells were filled in from the messages.
    lines = run["finals"].splitlines()
    assert all("–" in line.split(" ", 1)[0] for line in lines), lines
    assert run["first"].endswith(" ms") and run["final"].endswith(" ms")
    assert run["server"].count("ms") == 2
    assert run["seen"]["unstable"] or run["seen"]["stable"], "no partial was shown"
    report(pytestconfig, f"microphone: the clip's words after {run['heard_s']:.1f} s; first "
           f"partial {run['first']}, final after end of speech {run['final']}, server (first "
           f"text / final) {run['server']}; settled words shown: {run['seen']['stable']}")


@needs_browser
def test_screenshot_is_not_blank(microphone_run):
    from PIL import Image, ImageStat

    image = Image.open(microphone_run["screenshot"])
    assert image.size[0] >= WINDOW[0] * 0.9
    gray = image.convert("L")
    low, high = gray.getextrema()
    assert high - low > 100 and ImageStat.Stat(gray).stddev[0] > 10
    if os.environ.get("STT_UPDATE_SCREENSHOT"):  # refresh the one in the docs, on request
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").quantize(64).save(DOCS_SCREENSHOT, optimize=True)


@needs_browser
def test_chosen_file_transcript(chromium, whisper_ui, pytestconfig):
    driver = chromium(microphone=CLIP)
    open_page(driver, whisper_ui)
    started = time.monotonic()
    driver.find_element("id", "file").send_keys(str(CLIP))  # as <input type=file> is set
    wait_until(driver, lambda: state(driver) == "streaming", 10, "sending started")
    wait_until(driver, lambda: state(driver) == "idle", 60, "the file's session ended")
    report(pytestconfig, f"file: {CLIP.name} (11.0 s) sent and recognised in "
           f"{time.monotonic() - started:.1f} s")
    assert has_key_words(text_of(driver, "finals"))
    assert text_of(driver, "status") == "Done." and text_of(driver, "alert") == ""
    assert page_errors(driver) == []


@needs_browser
def test_full_server_is_said_so(chromium, start_server):
    from websockets.sync.client import connect

    server = start_server(web_ui=True, max_sessions=1)
    driver = chromium(microphone=CLIP)
    open_page(driver, server)
    with connect(server.ws_url()) as ws:
        ws.recv(timeout=10)  # ready: the only slot is taken
        driver.find_element("id", "start").click()
        wait_until(driver, lambda: "full" in text_of(driver, "alert"), 15, "a full message")
    assert text_of(driver, "alert").startswith("The server is full")
    assert state(driver) == "idle"
    assert driver.find_element("id", "level").get_attribute("value") == "0"  # mic released


@needs_browser
def test_refused_microphone_is_said_so(chromium, start_server):
    server = start_server(web_ui=True)
    driver = chromium(microphone=None)
    open_page(driver, server)
    driver.find_element("id", "start").click()
    wait_until(driver, lambda: "refused" in text_of(driver, "alert"), 15, "a refusal message")
    assert text_of(driver, "alert").startswith("Microphone access was refused")
    assert state(driver) == "idle" and server.ctx.slots.free == server.ctx.slots.limit


@needs_browser
def test_token_file_and_error_message(chromium, start_server, tmp_path):
    """A server with a key: the field shows, a missing key is named, the right one works (in
    the query string: browsers cannot set WebSocket headers); a file that is no audio ends
    with the server's error shown."""
    server = start_server(web_ui=True, auth_tokens="s3cret")
    driver = chromium(microphone=CLIP)
    open_page(driver, server)
    token = driver.find_element("id", "token")
    assert token.is_displayed()
    driver.find_element("id", "file").send_keys(str(CLIP))
    wait_until(driver, lambda: "API key" in text_of(driver, "alert"), 15, "a key message")
    token.send_keys("s3cret")
    driver.find_element("id", "file").send_keys(str(CLIP))
    wait_until(driver, lambda: state(driver) == "streaming", 10, "sending started")
    wait_until(driver, lambda: state(driver) == "idle", 30, "the file's session ended")
    assert has_key_words(text_of(driver, "finals")) and text_of(driver, "alert") == ""
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("this is not audio\n" * 200)
    driver.find_element("id", "file").send_keys(str(not_audio))
    wait_until(driver, lambda: "unsupported_audio" in text_of(driver, "alert"), 15,
               "the server's error")
    assert state(driver) == "idle"


def test_docs_screenshot_is_committed_and_small():
    assert DOCS_SCREENSHOT.exists() and DOCS_SCREENSHOT.stat().st_size < 150_000
