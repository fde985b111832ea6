"""The dashboard in a real browser: `dashboard.launch` (what `cachesearch dashboard` calls) serves a
filled store on a free port bound to 127.0.0.1, headless Debian Chromium loads the frontier page,
the Plotly plot renders, and clicking a front point selects that schedule (Streamlit's plotly
selection event round trip). A screenshot and the DOM are kept under artifacts/.

Chromium is driven over the DevTools protocol with `websockets` (a Streamlit dependency), so the test
needs no extra Python package. Install the browser with `apt-get install -y chromium`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from test_dashboard_data import fill_store

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class DevTools:
    """The few DevTools-protocol calls the test needs, on one page target."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect
        self._ws = connect(ws_url, max_size=2 ** 27, open_timeout=20).__enter__()
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return out.get("result", {}).get("value")

    def close(self) -> None:
        self._ws.close()


_GD = "document.querySelector('.js-plotly-plot')"
_SELECTED = f"(() => {{ const gd = {_GD}; if (!gd || !gd.data) return null; const t = gd.data[gd.data.length - 1]; " \
            "return t.name && t.name.startsWith('selected #') ? t.name : null; })()"


def start_dashboard(url: str, port: int, log: Any) -> subprocess.Popen:
    """`dashboard.launch` in a subprocess (as the CLI runs it), once it answers its health check."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, dashboard; sys.exit(dashboard.launch(sys.argv[1], "
                               "host='127.0.0.1', port=int(sys.argv[2])))", url, str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: _health(port) or proc.poll() is not None, 90, "the dashboard server")
    assert proc.poll() is None, f"the dashboard exited with {proc.returncode}"
    return proc


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    proc.terminate()                          # launch() forwards SIGTERM to the Streamlit server
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_chromium(profile: str) -> tuple[subprocess.Popen, DevTools]:
    """Headless Chromium with a DevTools port chosen by the browser, and a client on its page."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"chromium exited with {proc.returncode}")
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port, "chromium did not open its DevTools port"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        return proc, DevTools(page["webSocketDebuggerUrl"])
    except BaseException:
        stop(proc, 20)
        raise


def load_frontier(tools: DevTools, port: int, study: str, timeout: float = 90) -> float:
    """Navigate to the frontier page; seconds until the Plotly plot and its selection ring are drawn."""
    t0 = time.monotonic()
    tools.call("Page.navigate", url=f"http://127.0.0.1:{port}/?page=frontier&study={study}")
    wait_for(lambda: tools.js("document.querySelectorAll('.js-plotly-plot .plot-container .main-svg').length"),
             timeout, "the Plotly frontier plot", every=0.05)
    wait_for(lambda: tools.js(_SELECTED), 30, "the selected-point ring", every=0.05)
    return time.monotonic() - t0


@pytest.fixture()
def server(tmp_path: Path):
    url = fill_store(tmp_path / "results.db")
    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        proc = start_dashboard(url, port, log)
        try:
            yield port
        finally:
            stop(proc)
    wait_for(lambda: not _health(port), 30, "the server to stop after SIGTERM")


@pytest.fixture()
def browser(tmp_path: Path):
    proc, tools = start_chromium(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    try:
        tools.call("Page.enable")
        yield tools
        tools.close()
    finally:
        stop(proc, 20)


def _outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (to check the server is not reachable on them)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in out if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("127.")]


def test_server_binds_loopback_only(server: int) -> None:
    for address in _outside_addresses():
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, server)) != 0, f"dashboard reachable on {address}:{server}"
    with socket.create_connection(("127.0.0.1", server), timeout=5):
        pass


def _keep(tools: DevTools, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.write_bytes(base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"]))
    (ARTIFACTS / f"{name}.html").write_text(tools.js("document.documentElement.outerHTML") or "", encoding="utf-8")
    return shot


def test_frontier_page_renders_plot_and_click_selects(server: int, browser: DevTools) -> None:
    load_frontier(browser, server, "tiny-ecad")
    time.sleep(1.0)                                          # let WebGL points and fonts settle
    shot = _keep(browser, "dashboard_frontier")
    assert shot.stat().st_size > 20_000                      # a real rendering, not a blank page
    body = browser.js("document.body.innerText")
    assert "Frontier" in body and "tiny-ecad (ecad) · front" in body
    assert not browser.js("document.querySelector('[data-testid=\"stException\"]')")
    assert browser.js(f"{_GD}.data.length") == 6              # 2 studies x (all, front), the knee, the ring
    assert browser.js(f"{_GD}._fullData[0]._length") == 39    # every evaluation drawn (WebGL)

    # Click a front point other than the selected one: Streamlit's selection event selects it.
    before = browser.js(_SELECTED)
    target = browser.js(f"""(() => {{
        const gd = {_GD}; const ids = gd.data[1].customdata.map(c => c[0]);
        const pts = gd.querySelectorAll('.scatterlayer .trace')[0].querySelectorAll('path.point');
        for (let k = 0; k < ids.length; k++) {{
            if ('selected #' + ids[k] === '{before}') continue;
            const r = pts[k].getBoundingClientRect();
            if (r.width > 0 && r.top > 0 && r.bottom < window.innerHeight)
                return {{id: ids[k], q: gd.data[1].customdata[k][6], x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }}
        return null; }})()""")
    assert target, "no clickable front point in view"
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=target["x"], y=target["y"], button="left",
                     clickCount=1)
    wait_for(lambda: browser.js(_SELECTED) == f"selected #{target['id']}", 30,
             f"evaluation {target['id']} to become selected after the click")
    time.sleep(1.0)
    _keep(browser, "dashboard_frontier_clicked")
    text = " ".join(browser.js("document.body.innerText").split())
    assert f"psnr {target['q']:.4g} dB MAC speedup" in text         # the figures below show the clicked point


def test_evaluations_table_renders_and_a_row_click_opens_the_schedule(tmp_path: Path, browser: DevTools) -> None:
    """Started the way a user starts it (`cachesearch dashboard`, which runs `python -m dashboard`):
    the Evaluations table draws its rows, and clicking a row's selector opens that evaluation on the
    Schedule page."""
    url = fill_store(tmp_path / "ev.db")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(tmp_path / "cli.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", "--db", url, "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _health(port) or proc.poll() is not None, 90, "the dashboard server (via the CLI)")
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()
            browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/?page=evaluations&study=tiny-ecad")
            grid = "document.querySelector('[data-testid=\"stDataFrame\"] canvas')"
            wait_for(lambda: browser.js(f"!!{grid} && {grid}.getBoundingClientRect().height > 200"), 90,
                     "the evaluations table")
            wait_for(lambda: "41 of 41 evaluations" in (browser.js("document.body.innerText") or ""), 30, "its caption")
            time.sleep(1.0)
            _keep(browser, "dashboard_evaluations")
            box = browser.js(f"(() => {{ const r = {grid}.getBoundingClientRect(); "
                             "return {left: r.left, top: r.top}; })()")
            header, row = 36, 35                       # glide-data-grid's header and row heights in Streamlit
            x, y = box["left"] + 16, box["top"] + header + row * 1 + row / 2     # the selector of row 1: id 2
            for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
                browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
            wait_for(lambda: "eval=2" in (browser.js("location.search") or "")
                     and "Evaluation #2 · found by fora(interval=2)" in (browser.js("document.body.innerText") or ""),
                     60, "the Schedule page of evaluation 2 after the click")
            assert "page=schedule" in browser.js("location.search")
            wait_for(lambda: browser.js("document.querySelectorAll('.js-plotly-plot .main-svg').length"), 60,
                     "its plan heatmap")
            assert not browser.js("document.querySelector('[data-testid=\"stException\"]')")
            _keep(browser, "dashboard_evaluations_clicked")
        finally:
            stop(proc)
    wait_for(lambda: not _health(port), 30, "the server to stop after SIGTERM")
