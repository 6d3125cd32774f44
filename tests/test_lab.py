"""Notebook 01 in JupyterLab, in headless Chromium: every cell runs without error and the β slider
redraws the figure.

The test starts its own Jupyter server on 127.0.0.1 with a random token, on a copy of the
notebook in a temporary folder (autosave never touches the tracked file), with the `smoke`
preset (results go to the ignored scratch/). It drives Debian's `chromium` through its
`chromedriver` with selenium, which is pointed at both binaries and so downloads nothing; it
skips where they are missing (`.ci/run` installs them with apt).
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gift_lite.repro import repo_root

NOTEBOOK = "01_zero_vs_finite_temperature.ipynb"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SERVER_START_S = 90  # a cold JupyterLab on a loaded 2-core machine
RUN_ALL_S = 300  # notebook 01 takes 10-30 s; the margin is for a busy machine
REDRAW_S = 60

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("jupyterlab")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The open notebook as JupyterLab's own model sees it: the kernel's status and, per code cell,
# its execution count and output types (window.jupyterapp: --LabApp.expose_app_in_browser).
CELL_STATE_JS = """
const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.content.model || !panel.sessionContext.session) { return null; }
const kernel = panel.sessionContext.session.kernel;
const cells = [];
for (const cell of panel.content.model.cells) {
  if (cell.type === 'code') {
    cells.push({count: cell.executionCount, types: cell.outputs.toJSON().map(o => o.output_type)});
  }
}
return {status: kernel ? kernel.status : 'none', cells: cells};
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Jupyter server did not answer {url} within {timeout_s} s")


@pytest.fixture
def lab(tmp_path):
    """``(base_url, token)`` of a JupyterLab serving a copy of notebook 01; stopped afterwards."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(repo_root() / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    port, token = free_port(), secrets.token_hex(16)
    jupyter_dirs = {name: str(tmp_path / name.lower()) for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR")}
    env = {**os.environ, **jupyter_dirs, "GIFT_PRESET": "smoke"}  # smoke writes to scratch/ only
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={work}",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", proc, SERVER_START_S)
        yield base, token
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its kernels only
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def cell_state(driver):
    return driver.execute_script(CELL_STATE_JS)


def all_ran(driver) -> bool:
    state = cell_state(driver)
    return bool(state and state["status"] == "idle" and state["cells"]
                and all(cell["count"] is not None for cell in state["cells"]))


def widget_image(driver) -> str | None:
    """The ``src`` of the figure inside the slider's output area, or None before it is drawn."""
    images = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-output img, "
                                                   ".jp-OutputArea-output .jupyter-widgets-output-area img")
    return images[-1].get_attribute("src") if images else None


def move_slider(driver, steps: int = 1) -> None:
    handle = driver.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    for _ in range(steps):
        handle.send_keys(Keys.ARROW_RIGHT)


def test_notebook_01_runs_in_jupyterlab_and_the_beta_slider_redraws(lab, browser):
    base, token = lab
    browser.get(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    WebDriverWait(browser, SERVER_START_S).until(lambda d: (cell_state(d) or {}).get("status") == "idle")
    # Clear the saved outputs and counts first, so that all_ran waits for this kernel's run; the
    # commands' promises are not returned (selenium would wait on them under its script timeout).
    browser.execute_script("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');")
    WebDriverWait(browser, REDRAW_S).until(lambda d: not any(c["count"] or c["types"] for c in cell_state(d)["cells"]))
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    WebDriverWait(browser, RUN_ALL_S).until(all_ran)

    cells = cell_state(browser)["cells"]
    errors = [i for i, cell in enumerate(cells) if "error" in cell["types"]]
    assert not errors, f"code cells {errors} raised in JupyterLab"
    static = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
    assert len(static) >= 6, "the figures did not render"
    assert browser.find_elements(By.CSS_SELECTOR, ".jp-MarkdownOutput mjx-container"), "LaTeX did not render"

    readout = browser.find_element(By.CSS_SELECTOR, ".widget-slider .widget-readout")
    assert readout.text == "1.0" and widget_image(browser) is None  # the figure at beta = 1 is the one above
    move_slider(browser)
    WebDriverWait(browser, REDRAW_S).until(lambda d: widget_image(d) is not None)
    first = widget_image(browser)
    assert readout.text == "2.0"
    assert first != static[-1].get_attribute("src")  # a new figure, not the static one at beta = 1
    move_slider(browser)
    WebDriverWait(browser, REDRAW_S).until(lambda d: widget_image(d) not in (None, first))
    assert readout.text == "3.0"
    under_slider = browser.find_elements(By.CSS_SELECTOR, ".widget-output .jp-OutputArea-output, "
                                                          ".jupyter-widgets-output-area .jp-OutputArea-output")
    assert len(under_slider) == 1 and under_slider[0].find_elements(By.TAG_NAME, "img")  # the figure, no array reprs
    assert not [i for i, cell in enumerate(cell_state(browser)["cells"]) if "error" in cell["types"]]
