"""`cachesearch`: run schedule searches, inspect their fronts, export and apply schedules.

    cachesearch search configs/embedded_quick.yaml          # a study with live progress
    cachesearch search configs/embedded_quick.yaml --resume embedded-quick
    cachesearch studies / front STUDY / export STUDY --pick knee -o fast.json
    cachesearch apply fast.json --prompt "a red circle on a blue background"
    cachesearch dashboard

Every user-facing failure (bad config, unknown study, bad schedule file, a database that cannot be
used, a model that is not there, an evaluator pool that cannot start) is one clear message and exit
code 2, and is detected before anything is written; nothing already stored is lost.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Search per-step cache schedules for diffusion transformers: quality vs speed Pareto "
                       "fronts, stored, browsable and exportable.")
console = Console()
err = Console(stderr=True)

DB_HELP = ("Result database: a SQLAlchemy URL or a SQLite file path (default: $CACHESEARCH_DB, else "
           "sqlite:///cachesearch.db).")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from evaluators.models import ModelLoadError
    from evaluators.pool import PoolStartError
    from schedules import ScheduleError
    from store import StoreError

    from .config import ConfigError
    from .study import StudyError
    return (ConfigError, StudyError, StoreError, ScheduleError, ModelLoadError, PoolStartError, FileNotFoundError)


@contextmanager
def _user_input() -> Iterator[None]:
    """A user error inside becomes one message and exit code 2 (bad input), never a traceback."""
    try:
        yield
    except _user_errors() as exc:
        _fail(str(exc), 2)


def _store(db: Optional[str], create: bool = False):
    from store import Store, database_url
    return Store(database_url(db), create=create)


def _sigterm_as_interrupt() -> None:
    """A polite kill (SIGTERM) stops a search like Ctrl-C: state saved, study marked interrupted."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (e.g. inside a test runner thread)
        pass


@app.command()
def search(config: Path = typer.Argument(..., help="Study config (YAML); see `cachesearch schema config`."),
           resume: Optional[str] = typer.Option(None, "--resume", help="Continue this interrupted study."),
           db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress display."),
           top: int = typer.Option(20, help="Front members shown in the summary.")) -> None:
    """Run a study (or resume one): evaluate schedules until the budget ends, storing every result."""
    from .config import load_config
    from .reports import front_table
    from .study import run_study
    with _user_input():
        cfg = load_config(config)
    _sigterm_as_interrupt()
    try:
        with _user_input():
            name, outcome = run_study(cfg, source=str(config), db=db, resume=resume, show_progress=not quiet,
                                      console=console, log=lambda m: console.print(m, style="dim"))
    except KeyboardInterrupt:     # outside the loop's own handling (e.g. a second Ctrl-C while it saves)
        _fail("interrupted; every result stored so far is kept (continue with --resume STUDY)", 130)
    objectives = cfg.resolved_objectives()
    console.print(f"[bold]{name}[/]: {outcome.reason}; {outcome.evaluations} evaluations "
                  f"({outcome.evaluated_now} in this run), {outcome.evaluator_seconds:.0f} evaluator-s, "
                  f"hypervolume {outcome.hypervolume:.4g}")
    with _store(db or cfg.db) as store:
        front = store.front(name, objectives[0].name, objectives[-1].name)
        console.print(front_table(front, objectives[0].name, objectives[-1].name, f"front of {name}", top))
    if outcome.reason.startswith("interrupted"):
        console.print(f"interrupted; everything finished is stored. Continue with:\n"
                      f"  cachesearch search {config} --resume {name}" + (f" --db {db}" if db else ""),
                      soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(130)


@app.command()
def studies(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """List the studies in the database with their progress and best figures."""
    from .reports import studies_table
    with _user_input(), _store(db) as store:
        console.print(studies_table(store.list_studies(), now=time.time()))


@app.command()
def front(study: str = typer.Argument(..., help="Study name."),
          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
          quality: Optional[str] = typer.Option(None, help="Quality objective (default: the study's first)."),
          cost: Optional[str] = typer.Option(None, help="Speed objective (mac_speedup or latency_speedup)."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show the Pareto front of a study, fastest first."""
    from .reports import front_table
    with _user_input(), _store(db) as store:
        info = store.get_study(study)
        q, c = quality or info.quality, cost or info.cost
        records = store.front(study, q, c)
        hv = store.hypervolume(study, q, c)
    status = info.display_status(time.time())
    if status.startswith("stale"):
        err.print(f"study {study} is {status}: its run stopped without finishing; continue it with "
                  f"`cachesearch search CONFIG --resume {study}`", highlight=False)
    if as_json:
        print(json.dumps([{"hash": r.schedule_hash, q: r.objective(q), c: r.objective(c),
                           "mac_speedup": r.mac_speedup, "latency_speedup": r.latency_speedup,
                           "provenance": r.provenance} for r in reversed(records)], indent=2))
        return
    console.print(front_table(records, q, c, f"front of {study} ({len(records)} members, hypervolume {hv:.4g})"))


@app.command()
def evaluate(config: Path = typer.Argument(..., help="Study config whose `evaluation` section scores it."),
             schedule: Path = typer.Argument(..., help="Schedule JSON file."),
             as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Score one schedule file with a study config's evaluation settings (nothing is stored)."""
    from schedules import load_schedule

    from .config import load_config
    from .reports import metrics_table
    from .study import make_pool
    with _user_input():
        cfg = load_config(config)
        sched = load_schedule(schedule)
        pool = make_pool(cfg)
    try:
        result = next(iter(pool.evaluate([sched])))
    finally:
        pool.close()
    if as_json:
        print(json.dumps(result.summary(), indent=2, default=str))
    else:
        console.print(metrics_table(result, f"{schedule} ({sched.short_hash})"))
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def apply(schedule: Path = typer.Argument(..., help="Schedule JSON file."),
          prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeat for several)."),
          model: str = typer.Option("embedded", help="'embedded', a hub id or a local folder."),
          seed: int = typer.Option(0, help="Seed of the first image (then seed+1, ...)."),
          out: Path = typer.Option(Path("cachesearch_images"), "--out", "-o", help="Folder for the PNGs."),
          repeats: int = typer.Option(3, min=1, help="Timed runs for the latency speedup.")) -> None:
    """Generate images with a schedule and without it; report the MAC and measured latency speedups."""
    from .apply import apply_and_compare
    empty = [i for i, p in enumerate(prompt) if not p.strip()]
    if empty:
        _fail(f"--prompt: prompt {empty[0] + 1} is empty; give the text of each image to generate", 2)
    with _user_input():
        report = apply_and_compare(schedule, prompt, model, seed, out, repeats)
    for line in report:
        console.print(line)


@app.command()
def export(study: str = typer.Argument(..., help="Study name."),
           pick: str = typer.Option("knee", "--pick", help="knee | 'fastest-with psnr>=30' | 'best-with speedup>=2'"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write."),
           all_front: Optional[Path] = typer.Option(None, "--all-front", help="Write every front member here."),
           fmt: str = typer.Option("cachesearch", "--format", help="cachesearch (JSON) or cache-dit (YAML)."),
           db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Write the picked schedule (with its measured metrics and provenance) or the whole front."""
    from store import export_front, export_pick
    if output is None and all_front is None:
        _fail("give -o FILE (one picked schedule) and/or --all-front DIR", 2)
    with _user_input(), _store(db) as store:
        if output is not None:
            path = export_pick(store, study, pick, output, fmt=fmt)
            console.print(f"wrote {path} ({pick})")
        if all_front is not None:
            paths = export_front(store, study, all_front, fmt=fmt)
            console.print(f"wrote {len(paths)} front members to {all_front}")


@app.command()
def dashboard(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
              host: str = typer.Option("127.0.0.1", help="Bind address (keep 127.0.0.1 unless you mean it)."),
              port: int = typer.Option(8501, help="Port."),
              open_browser: bool = typer.Option(False, "--open", help="Open a browser tab.")) -> None:
    """Browse studies, fronts, schedules and images in the Streamlit dashboard."""
    from dashboard.launcher import launch
    from store import database_url
    raise typer.Exit(launch(database_url(db), host=host, port=port, open_browser=open_browser))


@app.command()
def schema(what: str = typer.Argument("schedule", help="schedule (the file format) or config (study YAML).")) -> None:
    """Print a JSON Schema: the schedule file format, or the study config."""
    if what == "schedule":
        from schedules import json_schema
        print(json.dumps(json_schema(), indent=2))
    elif what == "config":
        from .config import StudyConfig
        print(json.dumps(StudyConfig.model_json_schema(), indent=2))
    else:
        _fail(f"unknown schema {what!r}: schedule or config", 2)


@app.command()
def describe(model: str = typer.Argument("embedded", help="'embedded', a hub id or a local folder.")) -> None:
    """Show a model's block groups, components and MACs per component (what schedules control)."""
    from .apply import describe_model
    from .reports import describe_table
    with _user_input():
        spec, table = describe_model(model)
    console.print(describe_table(spec, table))


def main() -> None:   # python -m search.cli
    app()


if __name__ == "__main__":
    sys.exit(main())
