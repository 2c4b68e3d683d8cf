"""`mmat view` in real headless Chromium (Debian's, driven by Playwright): pages load without console
errors, images show, a filter narrows the list, a label persists, an injected <script> never runs.

Screenshots go to $MMAT_TEST_ARTIFACTS (or the test's tmp dir). Without Playwright or a Chromium the
tests skip and say which is missing (`.ci/run` installs Debian's chromium).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.view.storefix import EVAL_A, EVAL_B, RUN, build_store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]
PAGES = ["/", f"/runs/{RUN}", "/browse", "/browse?where=t.n_steps+%3E%3D+2", "/task/task-img", "/trajectory/traj-img",
         "/trajectory/traj-doc", "/trajectory/traj-xss", "/task/task-xss", "/pairs", "/eval", f"/eval/run/{EVAL_A}",
         f"/eval/diff?a={EVAL_A}&b={EVAL_B}"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright (python) is not installed: pip install playwright"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium at /usr/bin/chromium: apt-get install chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mmat view` itself, in a subprocess on a free loopback port, over a fixture store."""
    home = tmp_path_factory.mktemp("browser") / "home"
    build_store(home)
    port = _free_port()
    # the fixture's trajectories name dummy/ controllers: the testing kit's provider, loaded as a user's plug-in would be
    env = {**os.environ, "MMAT_HOME": str(home), "MMAT_PLUGINS": "mmat.testing", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", "from mmat.cli import main; main()", "view", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(base + "/assets/app.css", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mmat view did not start: {proc.stdout.read()}")
            time.sleep(0.3)
    yield base, home
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        except Exception as e:  # a chromium that cannot start here is a skip, with its reason
            pytest.skip(f"chromium at {CHROMIUM} did not start: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MMAT_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page that records console errors, uncaught exceptions and failed requests."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser):
    w = Watched(browser)
    yield w
    w.close()


def _shot(page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("url", PAGES)
def test_each_page_loads_without_console_errors(server, watched, artifacts, url):
    base, _ = server
    watched.page.goto(base + url, wait_until="networkidle")
    assert watched.page.locator("main > h1").count() == 1
    broken = watched.page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    assert broken == []
    _shot(watched.page, artifacts, "page" + url.replace("/", "_").replace("?", "_").replace("&", "_").replace("=", "-")[:80])
    assert watched.problems == []


def test_trajectory_page_shows_the_task_image_step_images_and_the_conversation(server, watched, artifacts):
    base, _ = server
    page = watched.page
    page.goto(base + "/trajectory/traj-img", wait_until="networkidle")
    for selector in ("img.task-image", "img.step-image"):
        image = page.locator(selector).first
        assert image.is_visible()
        assert image.evaluate("i => i.naturalWidth") > 0
    assert page.locator("#conversation").is_hidden()
    page.click("#toggle-conversation")
    assert page.locator("#conversation").is_visible()
    assert page.locator("#conversation .message").count() >= 3
    assert page.locator("#conversation img.conv-image").first.evaluate("i => i.naturalWidth") > 0
    _shot(page, artifacts, "trajectory_with_conversation")
    assert watched.problems == []


def test_a_filter_narrows_the_list(server, watched, artifacts):
    base, _ = server
    page = watched.page
    page.goto(base + "/browse", wait_until="networkidle")
    before = page.locator("#rows tr.row").count()
    page.select_option("#filter-domain", "finance")
    page.click("#apply")
    page.wait_for_load_state("networkidle")
    after = page.locator("#rows tr.row").count()
    assert 0 < after < before
    assert all(cell == "finance" for cell in page.locator("#rows tr.row td:nth-child(3)").all_inner_texts())
    page.fill("#filter-where", "k.query ILIKE '%revenue%'")
    page.click("#apply")
    page.wait_for_load_state("networkidle")
    assert page.locator("#rows tr.row").count() == 1
    page.fill("#filter-where", "this is not sql")
    page.click("#apply")
    page.wait_for_load_state("networkidle")
    assert page.locator("#filter-error").is_visible()
    _shot(page, artifacts, "browse_bad_filter")
    assert watched.problems == []


def test_a_label_click_persists(server, watched, artifacts):
    from mmat.store import Store

    base, home = server
    page = watched.page
    page.goto(base + "/trajectory/traj-doc", wait_until="networkidle")
    assert page.inner_text("#current-label") == "none"
    page.fill("#label input[name=note]", "the note says 12 percent")
    page.click("#label-incorrect")
    page.locator("#label-status.ok").wait_for(timeout=30_000)
    assert page.inner_text("#current-label") == "incorrect"
    page.reload(wait_until="networkidle")
    assert page.inner_text("#current-label") == "incorrect"
    _shot(page, artifacts, "label_persisted")
    with Store.open(home / "mmat.duckdb", read_only=True) as store:
        rows = store.sql("SELECT verdict, passed, reasons FROM verdicts WHERE verifier = 'label' AND subject_id = 'traj-doc'")
    assert [(r["verdict"], r["passed"]) for r in rows] == [("incorrect", False)] and "12 percent" in rows[0]["reasons"]
    assert watched.problems == []


@pytest.mark.parametrize("url", ["/trajectory/traj-xss", "/task/task-xss", "/pairs", f"/eval/run/{EVAL_A}", f"/runs/{RUN}", "/browse"])
def test_an_injected_script_does_not_run(server, watched, artifacts, url):
    base, _ = server
    page = watched.page
    page.goto(base + url, wait_until="networkidle")
    if page.locator("#toggle-conversation").count():
        page.click("#toggle-conversation")
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("main script").count() == 0 and page.locator("main img[src=x]").count() == 0
    if "xss" in url:
        assert "<script>window.__pwned = 1</script>" in page.inner_text("#query")
        _shot(page, artifacts, "injected_script_as_text" + url.replace("/", "_"))
    assert watched.problems == []


def test_the_static_report_opens_from_disk(server, watched, artifacts, tmp_path):
    from mmat.pipeline.report import build_report
    from mmat.store import Store
    from mmat.view import write_report

    _, home = server
    with Store.open(home / "mmat.duckdb", read_only=True) as store:
        index = write_report(build_report(store, RUN), tmp_path / "report")
    page = watched.page
    page.goto(index.as_uri(), wait_until="load")
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert len(widths) == 4 and all(w > 0 for w in widths)
    assert page.locator("#stages tr").count() > 5
    _shot(page, artifacts, "static_report")
    assert watched.problems == []
