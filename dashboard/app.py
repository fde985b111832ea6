"""Streamlit entry script: `streamlit run dashboard/app.py -- --db URL` (what `dashboard.launch` runs).

Streamlit executes this file on every interaction; the logic lives in importable modules so it is
imported once per server and tested without a browser.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Streamlit puts this script's folder on sys.path; our module names (data, state, ...) must not shadow
# other packages, so import them only as `dashboard.*`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:   # a source checkout: make `dashboard`, `store`, `schedules` importable
    sys.path.insert(0, str(_HERE.parent))

from dashboard.shell import main  # noqa: E402
from dashboard.views import evaluations, export, frontier, images, progress, schedule, studies  # noqa: E402

main({"Studies": studies.render, "Frontier": frontier.render, "Evaluations": evaluations.render,
      "Schedule": schedule.render, "Images": images.render, "Progress": progress.render, "Export": export.render})
