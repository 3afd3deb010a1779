"""The course in a real browser: JupyterLab on a loopback port, headless Chromium driven by Playwright.

nbval proves the kernels compute; this proves a learner sees the widgets and that dragging one redraws its
picture and numbers. Chromium is Debian's package (``apt-get install chromium``; QTUTOR_CHROMIUM names another
binary). Screenshots go to build/e2e/ for a person to look at. Run alone with ``pytest -m e2e tests/e2e``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "build" / "e2e"
CHROMIUM = os.environ.get("QTUTOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LOOPBACK = "127.0.0.1"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) "  # the notebook on show
TRACEBACK = "Traceback (most recent call last)"  # how an exception shows in a cell's output (stderr)
# Conditions the page is polled for, each given the notebook panel's CSS selector, every POLL_MS milliseconds
# (Playwright's default polls on every animation frame, 60 times a second, each a walk over the whole notebook:
# CPU the kernels and the other worker need).
POLL_MS = 200
ALL_CLEARED = r"""panel => [...document.querySelectorAll(panel + '.jp-CodeCell .jp-InputArea-prompt')]
                             .every(prompt => !/\d/.test(prompt.textContent))"""
ALL_RUN_OR_FAILED = r"""([panel, upto]) => {
    const cells = [...document.querySelectorAll(panel + '.jp-Cell')].slice(0, upto);
    const prompts = cells.filter(cell => cell.matches('.jp-CodeCell'))
                         .map(cell => cell.querySelector('.jp-InputArea-prompt'));
    const stderr = [...document.querySelectorAll(
        panel + '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
    const failed = stderr.some(output => output.textContent.includes(TRACEBACK));
    return failed || (prompts.length > 0 && prompts.every(prompt => /\[\d+\]/.test(prompt.textContent)));
}""".replace("TRACEBACK", repr(TRACEBACK))
OPEN = "async path => { await window.jupyterapp.commands.execute('docmanager:open', {path}); }"
CLOSE_UNSAVED = """() => {
    for (const widget of [...window.jupyterapp.shell.widgets('main')]) {
        if (widget.context) { widget.context.model.dirty = false; }
        widget.close();
    }
}"""
FIRST_CODE_CELL_WITH = r"""([panel, text]) => [...document.querySelectorAll(panel + '.jp-Cell')].findIndex(
    cell => cell.matches('.jp-CodeCell') && cell.querySelector('.jp-InputArea').innerText.includes(text))"""
# JupyterLab settings for the test: every cell in the page (no windowing), no news or update checks, and no
# autosave (a notebook saved with a dead kernel's widget ids makes the next test that opens it log errors).
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    ),
}


# Kernels being shut down in the background, one deletion at a time (shut_down_kernels).
BACKGROUND = ThreadPoolExecutor(max_workers=1)
STOPPING: list[Future] = []


def free_port() -> int:
    """A TCP port nobody listens on at the loopback address."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``url`` until the server answers, fails if it exits or takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {process.returncode} before answering on {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of the notebooks (the committed ones are never touched).

    Yields (url, token, folder served).
    """
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    for name, text in SETTINGS.items():
        (home / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / name).write_text(text)
    port, token = free_port(), os.urandom(16).hex()
    environment = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: tests open notebooks in one page
        "--ServerApp.allow_root=True",
    ]
    log = (home / "server.log").open("w")
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_server(f"{url}/api/status?token={token}", process)
        yield url, token, notebooks
    finally:
        try:
            for deletion in STOPPING:
                deletion.result(timeout=60)  # raises what a deletion raised
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright; fails, never skips, when Chromium is missing."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser test needs it. Install Debian's package "
            "(sudo apt-get install chromium; .ci/run does this) or set QTUTOR_CHROMIUM to a Chromium binary."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def lab_page(browser, lab):
    """One JupyterLab page for all the tests (the app takes seconds to load); each opens its notebook in it."""
    url, token, _ = lab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    loading = Recorder(page)
    page.goto(f"{url}/lab?reset&token={token}")
    page.wait_for_function("() => window.jupyterapp !== undefined")  # --LabApp.expose_app_in_browser
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    loading.stop()
    try:
        assert not loading.errors, f"browser console errors while JupyterLab loaded: {loading.errors}"
        assert not loading.blocked, f"JupyterLab tried to reach beyond the loopback address: {loading.blocked}"
        yield page
    finally:
        context.close()


class Recorder:
    """Records a page's console errors and the requests it tries beyond the loopback (refused), until stopped."""

    def __init__(self, page):
        self.page, self.errors, self.blocked = page, [], []
        page.context.route("**/*", self._only_loopback)
        page.on("console", self._console)
        page.on("pageerror", self._page_error)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _page_error(self, error) -> None:
        self.errors.append(f"page error: {error}")

    def _only_loopback(self, route):
        if urlparse(route.request.url).hostname in (LOOPBACK, "localhost") or route.request.url.startswith(
            ("data:", "blob:")
        ):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def stop(self) -> None:
        self.page.remove_listener("console", self._console)
        self.page.remove_listener("pageerror", self._page_error)
        self.page.context.unroute("**/*", self._only_loopback)


class Session(Recorder):
    """One notebook opened in the lab's page, recording console errors and any request that leaves the loopback."""

    def __init__(self, page, notebook: str):
        super().__init__(page)
        try:
            # As File > Open would: the notebook opens in a tab and starts its kernel.
            page.evaluate(OPEN, notebook)
            self.notebook = page.locator(PANEL + ".jp-Notebook")
            self.notebook.locator(".jp-Cell").first.wait_for()
            # The status bar says "Python 3 (ipykernel) | Idle" once the kernel has started and connected.
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=120_000)
        except Exception:
            self._close_tabs_and_stop()
            raise

    def menu(self, menu: str, item: str) -> None:
        """Click ``item`` in the main menu ``menu``, as a learner would."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
        self.page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()
        self.page.locator(".lm-Menu").first.wait_for(state="detached")

    def opens_cleanly(self) -> None:
        """The notebook as committed: its saved outputs and widget views render without console errors.

        Saved widget views drew nothing and logged nothing once the kernel was ready when watched for 6 s after
        "Idle" (01 and 07); the wait gives a late error its chance before a test clears the outputs.
        """
        assert self.notebook.locator(".jp-Cell").count() > 5
        self.page.wait_for_timeout(1500)
        assert not self.errors, f"browser console errors on opening: {self.errors}"
        assert not self.blocked, f"the page tried to reach beyond the loopback address: {self.blocked}"

    def run_through_explorer(self, timeout_s: float, *, through: str = "_explorer(") -> None:
        """Clear every output, run the cells up to and including the first code cell containing ``through`` (its
        widget), and wait until each has an execution count (or one fails).

        A learner's Run > Run All Above Selected Cell, with the cell after it selected; nbval runs every cell.
        """
        self.menu("Edit", "Clear Outputs of All Cells")
        self.page.wait_for_function(ALL_CLEARED, arg=PANEL, polling=POLL_MS)
        upto = 1 + self.page.evaluate(FIRST_CODE_CELL_WITH, [PANEL, through])
        assert upto > 0, f"no code cell contains {through!r}"
        cells = self.notebook.locator(".jp-Cell")
        if upto == cells.count():
            self.menu("Run", "Run All Cells")
        else:
            cells.nth(upto).locator(".jp-InputPrompt").click()  # select the cell after it
            self.menu("Run", "Run All Above Selected Cell")
        self.page.wait_for_function(ALL_RUN_OR_FAILED, arg=[PANEL, upto], timeout=timeout_s * 1000, polling=POLL_MS)
        failed = self.notebook.locator(".jp-OutputArea-output", has_text=TRACEBACK)
        assert failed.count() == 0, f"a cell raised: {failed.first.inner_text()[-2000:]}"

    def shows_every_widget(self) -> None:
        """Every explorer cell's output became a live widget with a picture; none failed to display."""
        explorers = self.notebook.locator(".jp-CodeCell", has=self.page.locator(".jp-InputArea", has_text="_explorer("))
        widgets = self.notebook.locator(".jp-OutputArea-output:has(> .jupyter-widgets) img.widget-image")
        assert explorers.count() >= 1 and widgets.count() >= explorers.count(), (
            f"{explorers.count()} explorer cells but {widgets.count()} widget pictures on the page"
        )
        broken = self.notebook.locator(".jp-OutputArea-output", has_text="Error displaying widget")
        assert broken.count() == 0, broken.first.inner_text()

    def widget_in_cell(self, code: str):
        """The widget box in the output of the code cell whose source contains ``code``."""
        cell = self.notebook.locator(".jp-CodeCell", has=self.page.locator(".jp-InputArea", has_text=code))
        widget = cell.locator(".jp-OutputArea-output .widget-vbox").first
        widget.locator("img.widget-image").wait_for()
        return widget

    def close(self, name: str) -> None:
        """Keep a picture of the page as it was left (the place to look when a test fails), then close the tab.

        The test changed the notebook (outputs cleared, cells run) and autosave is off: it is closed unsaved.
        """
        try:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-page.png"))
        finally:
            self._close_tabs_and_stop()

    def _close_tabs_and_stop(self) -> None:
        """Close every tab unsaved (the next test starts from an empty page), then stop recording."""
        try:
            self.page.evaluate(CLOSE_UNSAVED)
            self.page.locator(".jp-NotebookPanel").first.wait_for(state="detached")
        finally:
            self.stop()


def shut_down_kernels(lab) -> None:
    """Stop every kernel the server runs now (a closed page leaves its kernel running).

    The sessions are listed here and deleted in the background: a kernel that has run a notebook takes a second or
    two to exit, and the next test opens its notebook meanwhile. The lab fixture waits for every deletion.
    """
    url, token, _ = lab
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/sessions", headers=headers)) as response:
        sessions = json.load(response)

    def delete() -> None:
        for opened in sessions:
            request = urllib.request.Request(f"{url}/api/sessions/{opened['id']}", method="DELETE", headers=headers)
            urllib.request.urlopen(request, timeout=60).close()

    STOPPING.append(BACKGROUND.submit(delete))


@pytest.fixture
def session(lab_page, lab, request):
    """A Session on the notebook named by the test's parameter, always closed, its kernel stopped."""
    opened = Session(lab_page, request.param)
    try:
        yield opened
    finally:
        try:
            opened.close(request.node.name.replace("/", "_"))
        finally:
            shut_down_kernels(lab)
    served = lab[2] / request.param
    assert served.read_bytes() == (ROOT / "notebooks" / request.param).read_bytes(), "the browser saved the notebook"


def picture_and_numbers(widget) -> tuple[str, str]:
    """The widget's PNG (as its data URL) and its printed numbers."""
    return widget.locator("img.widget-image").get_attribute("src"), widget.locator(".widget-html").inner_text()


def settled(widget, quiet_s: float = 2.0, timeout_s: float = 30) -> tuple[str, str]:
    """The widget's picture and numbers once they have stopped changing for ``quiet_s`` seconds.

    A slider's front end may send the kernel a value of its own soon after it appears (a range slider
    snaps its value to its step), and a redraw is a round trip: read too early, and a test compares the
    wrong pictures.
    """
    deadline = time.monotonic() + timeout_s
    last, since = picture_and_numbers(widget), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.25)
        now = picture_and_numbers(widget)
        if now != last:
            last, since = now, time.monotonic()
    return last


def wait_for_redraw(widget, before: tuple[str, str], timeout_s: float = 30) -> tuple[str, str]:
    """Poll until the picture and the numbers both differ from ``before``, then until they settle."""
    deadline = time.monotonic() + timeout_s
    now = picture_and_numbers(widget)
    while time.monotonic() < deadline and (now[0] == before[0] or now[1] == before[1]):
        time.sleep(0.25)
        now = picture_and_numbers(widget)
    assert now[0] != before[0], f"the picture did not change within {timeout_s:.0f} s of moving the control"
    assert now[1] != before[1], f"the numbers did not change within {timeout_s:.0f} s: still {now[1]!r}"
    return settled(widget)


def numbers(text: str) -> dict[str, float]:
    """The numbers a widget's readout names, as floats: "scale 0.57  ·  zero-point 3" or "act_max=3.2  sqnr_db=22"."""
    return {
        name.strip().lower(): float(value)
        for name, value in re.findall(r"([A-Za-z][\w -]*?)[ =](-?[\d.]+(?:e[-+]?\d+)?)", text)
    }


def drag(page, handle, track, fraction: float) -> None:
    """Drag a slider's ``handle`` with the mouse to ``fraction`` of the way along its ``track``, as a learner does."""
    start, box = handle.bounding_box(), track.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + fraction * box["width"], start["y"] + start["height"] / 2, steps=10)
    page.mouse.up()


def screenshot(widget, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    widget.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def move_slider(session, widget, label: str, fraction: float, name: str):
    """Drag the widget's slider labelled ``label`` to ``fraction`` of its track and wait for the redraw.

    Screenshots before and after go to build/e2e/``name``_before.png and _after.png. Returns the slider's readout
    before and after, and the widget's (picture, numbers) before and after.
    """
    slider = widget.locator(".widget-slider", has=session.page.locator("label", has_text=label)).first
    readout = slider.locator(".widget-readout")
    before = settled(widget)
    assert before[0] and before[1], "the widget shows no picture or no numbers"
    old_value = readout.inner_text()
    screenshot(widget, f"{name}_before")
    drag(session.page, slider.locator(".noUi-handle").first, slider.locator(".noUi-base").first, fraction=fraction)
    after = wait_for_redraw(widget, before)
    screenshot(widget, f"{name}_after")
    return old_value, readout.inner_text(), before, after


# Each notebook is opened once, and run at most once, as far as its explorer (every notebook has one; nbval runs
# every cell): the tests that run a notebook also check that it opened cleanly and that its explorer became a
# live widget. Notebooks 07, 09 and 10 take minutes to reach theirs (DenseNet timings, PT2E, ONNX export) and are
# only opened; 08's explorer (the straight-through estimator) comes before its DenseNet cells.
EXPLORED = {"01_uniform_quantization.ipynb", "06_densenet_static_ptq.ipynb", "11_large_models.ipynb"}
WIDGET_NOTEBOOKS = [p.name for p in NOTEBOOKS if (p.name < "06" or p.name.startswith("08_")) and p.name not in EXPLORED]
OPENED_ONLY = [p.name for p in NOTEBOOKS if p.name not in EXPLORED and p.name not in WIDGET_NOTEBOOKS]


@pytest.mark.parametrize("session", ["01_uniform_quantization.ipynb"], indirect=True)
def test_uniform_explorer_redraws_when_the_bits_slider_moves(session):
    session.opens_cleanly()
    session.run_through_explorer(timeout_s=180)
    session.shows_every_widget()
    widget = session.widget_in_cell("uniform_explorer(data)")
    bits, new_bits, before, after = move_slider(session, widget, "bits", 0.6, "01_uniform_explorer")
    bits, new_bits = int(bits), int(new_bits)
    assert new_bits > bits, f"dragging the bits slider right left it at {new_bits}"
    # Each extra bit quarters the rounding error: the numbers must be those of the new width, not the old one.
    assert numbers(after[1])["mse"] < numbers(before[1])["mse"] / 4 ** (new_bits - bits) * 2
    # The greyed-out zero-point slider shows the zero-point the range gives at the new width.
    zero_point = widget.locator(".widget-slider", has=session.page.locator("label", has_text="zero-point")).first
    assert int(zero_point.locator(".widget-readout").inner_text()) == numbers(after[1])["zero-point"]
    assert not session.errors, f"browser console errors: {session.errors}"
    assert not session.blocked, f"the page tried to reach beyond the loopback address: {session.blocked}"
    print(f"bits {bits} -> {new_bits}; numbers before: {before[1]!r}; after: {after[1]!r}")


@pytest.mark.parametrize("session", ["06_densenet_static_ptq.ipynb"], indirect=True)
def test_layer_explorer_redraws_when_another_layer_is_picked(session):
    """Notebook 06 run as far as its layer explorer (the whole notebook takes minutes)."""
    session.opens_cleanly()
    session.run_through_explorer(timeout_s=600)
    widget = session.widget_in_cell("layer_explorer(activations, layers)")
    picker = widget.locator(".widget-dropdown select")
    options = picker.locator("option").all_inner_texts()
    assert len(options) > 10, f"the layer picker offers only {options}"
    before = settled(widget)
    screenshot(widget, "06_layer_explorer_before")
    picker.select_option(options[len(options) // 2])
    after = wait_for_redraw(widget, before)
    screenshot(widget, "06_layer_explorer_after")
    assert not session.errors, f"browser console errors: {session.errors}"
    assert not session.blocked, f"the page tried to reach beyond the loopback address: {session.blocked}"
    print(f"layer {options[0]} -> {options[len(options) // 2]}; numbers before: {before[1]!r}; after: {after[1]!r}")


@pytest.mark.parametrize("session", ["11_large_models.ipynb"], indirect=True)
def test_smoothquant_explorer_redraws_when_alpha_moves(session):
    session.opens_cleanly()
    session.run_through_explorer(timeout_s=300)
    session.shows_every_widget()
    widget = session.widget_in_cell("smoothquant_explorer(clean, weight, channels)")
    alpha, new_alpha, before, after = move_slider(session, widget, "alpha", 0.9, "11_smoothquant_explorer")
    alpha, new_alpha = float(alpha), float(new_alpha)
    assert new_alpha > alpha, f"dragging the alpha slider right left it at {new_alpha}"
    # More migration: the activations' range shrinks and the weights' grows; the unsmoothed error stays put.
    old, new = numbers(before[1]), numbers(after[1])
    assert new["act_max"] < old["act_max"] and new["weight_max"] > old["weight_max"]
    assert new["sqnr_db_unsmoothed"] == old["sqnr_db_unsmoothed"]
    assert not session.errors, f"browser console errors: {session.errors}"
    assert not session.blocked, f"the page tried to reach beyond the loopback address: {session.blocked}"
    print(f"alpha {alpha} -> {new_alpha}; numbers before: {before[1]!r}; after: {after[1]!r}")


@pytest.mark.parametrize("session", WIDGET_NOTEBOOKS, indirect=True)
def test_notebook_shows_its_explorer_live(session):
    """Notebooks 00, 02-05 and 08: run to their explorer and check it became a live widget."""
    session.opens_cleanly()
    session.run_through_explorer(timeout_s=300)
    session.shows_every_widget()
    session.page.wait_for_timeout(1000)
    assert not session.errors, f"browser console errors: {session.errors}"
    assert not session.blocked, f"the page tried to reach beyond the loopback address: {session.blocked}"


@pytest.mark.parametrize("session", OPENED_ONLY, indirect=True)
def test_notebook_opens_without_front_end_errors(session):
    session.opens_cleanly()


def test_every_notebook_is_opened_by_one_test():
    assert sorted([*EXPLORED, *WIDGET_NOTEBOOKS, *OPENED_ONLY]) == [p.name for p in NOTEBOOKS]
