"""`python -m dashboard [--db URL] [--host H] [--port P] [--open]`: the dashboard as a program of its own.

This is what `cachesearch dashboard` runs (it replaces its own process with this one), so the CLI
never imports the `dashboard` package: dependencies flow search -> store and dashboard -> store.
"""

from __future__ import annotations

import argparse
import sys

from store import database_url

from .launcher import launch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard",
                                     description="Browse a cachesearch result database (Streamlit, read-only).")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL or SQLite file (default: $CACHESEARCH_DB, "
                                                   "else sqlite:///cachesearch.db)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (keep 127.0.0.1 unless you mean it)")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--open", action="store_true", help="open a browser tab")
    args = parser.parse_args(argv)
    return launch(database_url(args.db), host=args.host, port=args.port, open_browser=args.open)


if __name__ == "__main__":
    sys.exit(main())
