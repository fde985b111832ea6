"""`cachesearch`: run schedule searches, inspect their fronts, export and apply schedules.

    cachesearch search configs/embedded_quick.yaml          # a study with live progress
    cachesearch search configs/embedded_quick.yaml --resume embedded-quick
    cachesearch studies / front STUDY / export STUDY --pick knee -o fast.json
    cachesearch apply fast.json --prompt "a red circle on a blue background"
    cachesearch validate embedded-quick                     # the front on held-out prompts
    cachesearch compare embedded-vs-peers                   # the front against diffusers' caches
    cachesearch dashboard

Scriptable: `--json` on studies, front, describe, export, apply and evaluate prints one JSON document
on stdout; tables piped to a file are never cut to the terminal's width; every command reads the
database from `--db`, else (search) the config's `db:`, else `$CACHESEARCH_DB`, else ./cachesearch.db.
One evaluation id is used everywhere (front, export, the dashboard, errors).

Every user-facing failure (bad config, unknown study, bad schedule file, a database that cannot be
used, a model that is not there, an evaluator pool that cannot start) is one clear message and exit
code 2, and is detected before anything is written; nothing already stored is lost. Store commands
(studies, front, export, delete) import neither torch nor the searchers.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .registry import NAMES as SEARCHER_NAMES

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Search per-step cache schedules for diffusion transformers: quality vs speed Pareto "
                       "fronts, stored, browsable and exportable.")
console = Console()
err = Console(stderr=True)

DB_HELP = ("Result database: a SQLAlchemy URL or a SQLite file path (default: $CACHESEARCH_DB, else "
           "sqlite:///cachesearch.db).")
JSON_HELP = "Print one JSON document instead of tables."
COST_HELP = "Speed objective: mac_speedup, latency_speedup or latency_speedup_model (default: the study's)."
QUALITY_HELP = "Quality objective (default: the study's primary one)."
#: Width of a console that is not a terminal: tables and lines piped to a file keep whole names.
PIPE_WIDTH = 10_000


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


#: Errors of modules a command may have loaded, by module: bad input they raise is the user's. Looked
#: up only in modules already imported (an error can only come from a loaded module), so a store
#: command that fails never imports the search stack or torch just to name the error it caught.
_USER_ERRORS = {"schedules": ("ScheduleError", "ObjectiveError"), "store": ("StoreError",),
                "search.config": ("ConfigError",), "search.study": ("StudyError",), "search.validate": ("ValidationRefused",),
                "evaluators.models": ("ModelLoadError",), "evaluators.pool": ("PoolStartError",)}


def _user_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, names in _USER_ERRORS.items():
        loaded = sys.modules.get(module)
        found += [getattr(loaded, n) for n in names] if loaded is not None else []
    return tuple(found)


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


def _print_json(doc: Any) -> None:
    """One JSON document on stdout (non-finite floats as strings, so the output stays strict JSON)."""
    print(json.dumps(_strict(doc), indent=2, default=str))


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _version(value: bool) -> None:
    if value:
        from importlib import metadata
        try:
            version = metadata.version("cachesearch")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed: run from a source checkout)"
        print(f"cachesearch {version}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Search per-step cache schedules for diffusion transformers."""
    for c in (console, err):             # piped or captured output: never cut lines to 80 columns
        c.width = None if c.is_terminal else PIPE_WIDTH   # type: ignore[assignment]


def _sigterm_as_interrupt() -> None:
    """A polite kill (SIGTERM) stops a search like Ctrl-C: state saved, study marked interrupted."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (e.g. inside a test runner thread)
        pass


@app.command()
def search(config: Path = typer.Argument(..., help=f"Study config (YAML; `searcher: {{name: ...}}` is one of "
                                                    f"{', '.join(SEARCHER_NAMES)}); see `cachesearch schema config`."),
           resume: Optional[str] = typer.Option(None, "--resume", help="Continue this interrupted study."),
           db: Optional[str] = typer.Option(None, "--db", help=DB_HELP + " A config's `db:` comes before "
                                                                         "$CACHESEARCH_DB."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress display."),
           top: int = typer.Option(20, help="Front members shown in the summary.")) -> None:
    """Run a study (or resume one): evaluate schedules until the budget ends, storing every result."""
    from store import database_url

    from .config import load_config
    from .reports import front_table
    from .study import run_study
    with _user_input():
        cfg = load_config(config)
        url = database_url(db or cfg.db)
    _sigterm_as_interrupt()
    try:
        with _user_input():
            name, outcome = run_study(cfg, source=str(config), db=url, resume=resume, show_progress=not quiet,
                                      console=console, log=lambda m: console.print(m, style="dim"))
    except KeyboardInterrupt:     # outside the loop's own handling (e.g. a second Ctrl-C while it saves)
        _fail("interrupted; every result stored so far is kept (continue with --resume STUDY)", 130)
    objectives = cfg.resolved_objectives()
    quality, cost = objectives.quality.name, objectives.cost.name
    console.print(f"[bold]{name}[/]: {outcome.reason}; {outcome.evaluations} evaluations "
                  f"({outcome.evaluated_now} in this run), {outcome.evaluator_seconds:.0f} evaluator-s, "
                  f"hypervolume {outcome.hypervolume:.4g}")
    with _store(url) as store:
        info = store.get_study(name)
        front = store.front(name, quality, cost)
        console.print(front_table(front, info.pair(quality, cost), f"front of {name}", top))
    if outcome.reason.startswith("interrupted"):
        console.print(f"interrupted; everything finished is stored. Continue with:\n"
                      f"  cachesearch search {config} --resume {name}" + (f" --db {db}" if db else ""),
                      soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(130)


@app.command()
def studies(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the studies in the database with their progress and best figures."""
    from .reports import studies_doc, studies_table
    now = time.time()
    with _user_input(), _store(db) as store:
        summaries = store.list_studies()
    if as_json:
        _print_json(studies_doc(summaries, now))
        return
    console.print(studies_table(summaries, now=now))


@app.command()
def front(study: str = typer.Argument(..., help="Study name."),
          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
          quality: Optional[str] = typer.Option(None, help=QUALITY_HELP),
          cost: Optional[str] = typer.Option(None, help=COST_HELP),
          as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show the Pareto front of a study, fastest first, by evaluation id. The hypervolume is shown when
    the objectives have reference values (a front needs none)."""
    from schedules.objectives import ObjectiveError

    from .reports import baselines_doc, baselines_table, front_doc, front_table
    with _user_input(), _store(db) as store:
        info = store.get_study(study)
        pair = info.pair(quality, cost)
        records = store.front(study, pair[0].name, pair[1].name)
        peers = store.baselines(study)
        try:
            hv: float | None = store.hypervolume(study, pair[0].name, pair[1].name)
            hv_note = None
        except ObjectiveError as exc:
            hv, hv_note = None, str(exc)
    status = info.display_status(time.time())
    if status.startswith("stale"):
        err.print(f"study {study} is {status}: its run stopped without finishing; continue it with "
                  f"`cachesearch search CONFIG --resume {study}`", highlight=False)
    if as_json:
        _print_json({**front_doc(info, pair, records, hv, hv_note), "baselines": baselines_doc(peers, pair)})
        return
    title = f"front of {study} ({len(records)} members" + (f", hypervolume {hv:.4g})" if hv is not None else ")")
    console.print(front_table(records, pair, title))
    if peers:
        console.print(baselines_table(peers, pair, f"peer methods scored in {study} (not candidates; "
                                                   f"`cachesearch compare {study}`)"))
    if hv_note:
        err.print(f"no hypervolume: {hv_note}", highlight=False)


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
        _print_json(result.summary())
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
          repeats: int = typer.Option(3, min=1, help="Timed runs for the latency speedup."),
          as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Generate images with a schedule and without it; report the MAC and measured latency speedups."""
    from .apply import apply_and_compare
    empty = [i for i, p in enumerate(prompt) if not p.strip()]
    if empty:
        _fail(f"--prompt: prompt {empty[0] + 1} is empty; give the text of each image to generate", 2)
    with _user_input():
        report = apply_and_compare(schedule, prompt, model, seed, out, repeats)
    if as_json:
        _print_json(report.to_dict())
        return
    for line in report.lines():
        console.print(line)


@app.command()
def compare(study: str = typer.Argument(..., help="Study name."),
            quality: Optional[str] = typer.Option(None, help=QUALITY_HELP),
            db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Our front against the peer methods the study scored (its `baselines:` section): for each peer
    setting, our best quality at a MAC speedup and at a measured latency speedup at least the peer's."""
    from store.baselines import compare as compare_front

    from .reports import compare_doc, compare_summary, compare_table
    costs = ("mac_speedup", "latency_speedup")
    with _user_input(), _store(db) as store:
        comparisons = compare_front(store, study, quality)
    if as_json:
        _print_json(compare_doc(comparisons, costs))
        return
    if not comparisons:
        _fail(f"study '{study}' scored no peer method: add a `baselines:` section to its config "
              "(e.g. configs/embedded_vs_peers.yaml) and run it", 2)
    console.print(compare_table(comparisons, costs, f"{study}: our front vs peers"))
    for line in compare_summary(comparisons, costs):
        console.print(line, highlight=False)
    for cmp in comparisons:
        if not cmp.baseline.ok:
            console.print(f"{cmp.baseline.label} cannot run on this model: {cmp.baseline.error}", highlight=False,
                          markup=False)


@app.command()
def validate(study: str = typer.Argument(..., help="Study name."),
             prompts: str = typer.Option("heldout", help="Held-out prompt set: a built-in name or a file (one per "
                                                         "line, or a JSON list)."),
             num_prompts: Optional[int] = typer.Option(None, min=1, help="Use only the first N prompts."),
             seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds (default: the study's)."),
             steps: Optional[int] = typer.Option(None, min=1, help="Step count (only the study's own: a plan does "
                                                                    "not map to another step count)."),
             resolution: Optional[str] = typer.Option(None, help="HxW, e.g. 512x512: score the same plans at "
                                                                 "another resolution (pipelines that take height/width)."),
             ids: Optional[str] = typer.Option(None, help="Comma-separated evaluation ids (default: the front)."),
             max_drop: Optional[float] = typer.Option(None, help="Flag members losing more quality than this "
                                                                 "(default 2, in the quality's unit)."),
             db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
             as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Re-score a study's front (or chosen evaluations) on prompts/seeds it did not calibrate on; store
    the results linked to the originals and show calibration vs held-out quality."""
    from store.validation import DEFAULT_MAX_DROP, validation_pairs

    from .reports import validation_doc, validation_table
    from .validate import HeldOutSet, ValidationRefused, parse_resolution, validate_study

    def numbers(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
        if text is None:
            return None
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            _fail(f"{option}: expected comma-separated integers, got {text!r}", 2)
    try:
        size = parse_resolution(resolution) if resolution is not None else None
    except ValidationRefused as exc:
        _fail(str(exc), 2)
    heldout = HeldOutSet(prompts, num_prompts, numbers(seeds, "--seeds"), steps, size)
    chosen_ids = numbers(ids, "--ids")
    limit = DEFAULT_MAX_DROP if max_drop is None else max_drop
    log = (lambda line: err.print(line, highlight=False, markup=False)) if as_json else (
        lambda line: console.print(line, highlight=False, markup=False))
    with _user_input(), _store(db) as store:
        try:
            set_hash, _ = validate_study(store, study, heldout, ids=chosen_ids, log=log)
        except ValidationRefused as exc:
            _fail(str(exc), 2)
        pairs = validation_pairs(store, study, prompt_set_hash=set_hash, front_only=not chosen_ids)
        if chosen_ids:
            pairs = [p for p in pairs if p.original.id in set(chosen_ids)]
        cost = store.get_study(study).pair(None, None)[1].name
    if as_json:
        _print_json(validation_doc(pairs, cost, limit, set_hash))
        return
    console.print(validation_table(pairs, cost, limit, f"{study}: calibration vs held-out ({prompts})"))
    flagged = [p.original.id for p in pairs if p.flagged(limit)]
    if flagged:
        console.print(f"{len(flagged)} member(s) lose more than {limit:g} on held-out prompts: "
                      f"{', '.join(map(str, flagged))}", highlight=False)


@app.command()
def export(study: str = typer.Argument(..., help="Study name."),
           pick: str = typer.Option("knee", "--pick", help="knee | 'fastest-with psnr>=30' | 'best-with speedup>=2'"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write."),
           all_front: Optional[Path] = typer.Option(None, "--all-front", help="Write every front member here."),
           fmt: str = typer.Option("cachesearch", "--format", help="cachesearch (JSON) or cache-dit (YAML)."),
           quality: Optional[str] = typer.Option(None, help=QUALITY_HELP),
           cost: Optional[str] = typer.Option(None, help=COST_HELP + " 'fastest' means by this one."),
           heldout: bool = typer.Option(False, "--held-out", help="Pick on held-out quality, among the front "
                                        "members `cachesearch validate` re-scored."),
           db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Write the picked schedule (with its measured metrics and provenance) or the whole front, and
    say which evaluation each file holds."""
    from store import write_front, write_pick

    from .reports import written_doc, written_line
    if output is None and all_front is None:
        _fail("give -o FILE (one picked schedule) and/or --all-front DIR", 2)
    written = []
    with _user_input(), _store(db) as store:
        if output is not None:
            written.append(write_pick(store, study, pick, output, quality=quality, cost=cost, fmt=fmt,
                                      heldout=heldout))
        if all_front is not None:
            written += write_front(store, study, all_front, quality=quality, cost=cost, fmt=fmt)
        pair = store.get_study(study).pair(quality, cost)
    if as_json:
        _print_json(written_doc(written, pair, pick if output is not None else None))
        return
    for w in written:
        console.print(written_line(w, pair), soft_wrap=True, highlight=False, markup=False)


@app.command()
def delete(study: str = typer.Argument(..., help="Study name."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (for scripts)."),
           db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Delete a study with its evaluations, images and searcher state (after confirmation). Schedules
    stay: they are shared by hash with other studies. A study a live run holds is refused."""
    with _user_input(), _store(db) as store:       # create=False: never makes a database to delete from
        info = store.get_study(study)
        summary = next(s for s in store.list_studies() if s.name == study)
        status = info.display_status(time.time())
        if status == "running" and info.run is not None:
            _fail(f"study '{study}' is being run by {info.run.owner}; stop that run first", 2)
        what = f"study '{study}' ({summary.n_evaluations} finished evaluations, {summary.n_pending} pending)"
        if not yes:
            try:
                confirmed = typer.confirm(f"Delete {what} from {store!r}?", default=False)
            except typer.Abort:          # stdin closed (a script): never delete without a yes
                _fail(f"no confirmation to delete {what}: nothing deleted (pass --yes in scripts)", 2)
            if not confirmed:
                _fail("nothing deleted", 1)
        store.delete_study(study)
    console.print(f"deleted {what}", highlight=False, markup=False)


def dashboard_command(db_url: str, host: str, port: int, open_browser: bool) -> list[str]:
    """The dashboard as a program of its own (`python -m dashboard`): the CLI never imports the
    `dashboard` package (dependencies flow search -> store, dashboard -> store, never across)."""
    return [sys.executable, "-m", "dashboard", "--db", db_url, "--host", host, "--port", str(int(port))] + (
        ["--open"] if open_browser else [])


@app.command()
def dashboard(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
              host: str = typer.Option("127.0.0.1", help="Bind address (keep 127.0.0.1 unless you mean it)."),
              port: int = typer.Option(8501, help="Port."),
              open_browser: bool = typer.Option(False, "--open", help="Open a browser tab.")) -> None:
    """Browse studies, fronts, evaluations, schedules and images in the Streamlit dashboard."""
    from store import database_url
    command = dashboard_command(database_url(db), host, port, open_browser)
    sys.stdout.flush()
    os.execv(command[0], command)        # the dashboard replaces this process: Ctrl-C and SIGTERM reach it


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
def describe(model: str = typer.Argument("embedded", help="'embedded', a hub id or a local folder."),
             as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show a model's block groups, components and MACs per component (what schedules control)."""
    from .apply import describe_model
    from .reports import describe_doc, describe_table
    with _user_input():
        spec, table = describe_model(model)
    if as_json:
        _print_json(describe_doc(spec, table))
        return
    console.print(describe_table(spec, table))


@app.command()
def peers(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the peer methods a study's `baselines:` section can score, with their default settings
    (a list value in a study's settings sweeps)."""
    from evaluators.baselines import BASELINES

    from .reports import peers_doc, peers_table
    entries = [BASELINES[name] for name in sorted(BASELINES)]
    if as_json:
        _print_json(peers_doc(entries))
        return
    console.print(peers_table(entries))
    for b in entries:
        if not b.available:
            console.print(f"{b.name} needs {b.requires}, which is not installed: {b.install_hint}", highlight=False,
                          markup=False)


def main() -> None:   # python -m search.cli
    app()


if __name__ == "__main__":
    sys.exit(main())
