"""Start the dashboard as a `streamlit run` subprocess.

Streamlit apps are scripts run by Streamlit's own server, so the CLI cannot call the app in-process; it
runs `python -m streamlit run dashboard/app.py` with the same interpreter, bound to 127.0.0.1 unless
told otherwise (a result database is private by default), and passes the database URL both as a
script argument and in `CACHESEARCH_DB` (the app reads either).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from store import DB_ENV   # the variable the app reads the database URL from (tests set it for `AppTest`)
from store import database_url as normalize_url   # a file path -> absolute sqlite URL (one home: store)
_REPO_ROOT = Path(__file__).resolve().parents[1]


def app_path() -> Path:
    """The Streamlit entry script (what `streamlit run` is given)."""
    return Path(__file__).with_name("app.py")


def streamlit_command(db_url: str, host: str = "127.0.0.1", port: int = 8501,
                      open_browser: bool = False) -> list[str]:
    """The exact command `launch` runs (exposed so tests and docs show the same thing)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", host,
        "--server.port", str(int(port)),
        "--server.headless", "false" if open_browser else "true",
        "--server.fileWatcherType", "none",     # the app is installed code, not a file being edited
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",  # never phone home from a results browser
        "--client.toolbarMode", "minimal",      # no "Deploy" button: this is a local results browser
        "--", "--db", normalize_url(db_url),
    ]


def launch(db_url: str, host: str = "127.0.0.1", port: int = 8501, open_browser: bool = False) -> int:
    """Run the dashboard until it exits (Ctrl-C stops it); returns Streamlit's exit code.

    The database is not opened here: a missing or foreign database is explained on the page itself,
    so the server starts either way and shows live data once a search creates the file.
    """
    env = dict(os.environ)
    env[DB_ENV] = normalize_url(db_url)
    # The app imports `dashboard`, `store`, `schedules`; make them importable from a source checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(streamlit_command(db_url, host, port, open_browser), env=env)
    # A service manager (or a test) stops us with SIGTERM: pass it on so no orphaned server keeps the port.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
