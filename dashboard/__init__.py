"""The cachesearch dashboard: Streamlit + Plotly, read-only on a store.

People choose a schedule by looking at the quality/speed front, at what a schedule does step by step,
and at its images next to the reference. This package only reads the store (`dashboard -> store ->
schedules`); nothing imports it except the CLI, which calls `launch`:

    import dashboard
    dashboard.launch("sqlite:///cachesearch.db", host="127.0.0.1", port=8501)

Importing the package is cheap (no Streamlit, no store): the app itself runs in a `streamlit run`
subprocess.
"""

from .launcher import DB_ENV, app_path, launch, normalize_url, streamlit_command

__all__ = ["DB_ENV", "app_path", "launch", "normalize_url", "streamlit_command"]
