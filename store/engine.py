"""URL -> configured SQLAlchemy engine, and the schema-version gate.

SQLite (the default) is set up for one writer and many readers across processes:
- WAL journal, so readers never block the writer nor the writer the readers;
- busy_timeout, so a second writer waits for the lock instead of failing at once;
- foreign keys on (SQLite leaves them off by default), so cascades and references hold;
- synchronous=FULL: a committed result survives a power cut, not only a killed process (results
  cost seconds each to compute; an fsync per commit is noise next to that);
- pysqlite's own transaction handling is switched off and we emit BEGIN ourselves, BEGIN IMMEDIATE
  for writes: a write transaction takes the write lock up front, so it waits under busy_timeout
  rather than failing with "database is locked" when it upgrades from a read (the SQLAlchemy docs'
  recipe for pysqlite).
Any other URL (PostgreSQL) gets pre-ping pooling and the same JSON codec.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from . import codec
from .errors import DatabaseUnavailable, SchemaVersionError, StoreError
from .models import ADDED_COLUMNS, OPTIONAL_TABLES, SCHEMA_TABLE, SCHEMA_VERSION, TABLES, Base, SchemaInfo

BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK_KEY = 0x63616368   # PostgreSQL advisory lock held while the schema is checked or created ("cach")
WRITE_OPTION = "cachesearch_write"   # execution option marking a connection that will write


DEFAULT_URL = "sqlite:///cachesearch.db"
DB_ENV = "CACHESEARCH_DB"   # the database when none is named: one URL a team sets once (dashboard too)
POSTGRES_DRIVERS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"))   # (SQLAlchemy driver, module)


def database_url(db: str | os.PathLike[str] | None) -> str:
    """What users pass as `--db`: a SQLAlchemy URL as is, a plain file path as an absolute
    `sqlite:///` URL (so a path works from any working directory), nothing as `$CACHESEARCH_DB` or,
    without it, the default file."""
    if db is None or not str(db).strip():
        db = os.environ.get(DB_ENV, "").strip()
        if not db:
            return DEFAULT_URL
    text = str(db).strip()
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _parse(url: str | URL) -> URL:
    """The URL with a driver this install has: `postgresql://` (the README's form) means psycopg 3 to
    SQLAlchemy 2.1; where only psycopg2 is installed it is used instead. An unknown dialect or a
    missing driver is a `DatabaseUnavailable` naming the fix."""
    shown = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    try:
        u = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable("url", f"--db {shown!r} is neither a file path nor a database URL "
                                         "(e.g. sqlite:///results.db, postgresql://user@host/db)") from None
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg", "psycopg2") \
            and "+" not in u.drivername:
        for driver, module in POSTGRES_DRIVERS:
            if importlib.util.find_spec(module) is not None:
                return u.set(drivername=f"postgresql+{driver}")
    try:
        u.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise DatabaseUnavailable("url", f"the database URL {shown!r} names an unknown dialect "
                                         f"'{u.drivername}' (use sqlite:///FILE, postgresql://USER@HOST/DB, or "
                                         "a file path)") from None
    except ImportError as exc:
        extra = " (pip install 'cachesearch[postgres]')" if u.get_backend_name() == "postgresql" else ""
        raise DatabaseUnavailable("driver", f"the database URL {shown!r} needs the Python module "
                                            f"'{exc.name or exc}', which is not installed{extra}") from None
    return u


def _check_sqlite_file(path: Path, create: bool) -> None:
    """Refuse, before any connection that could write, what is not (or not yet) a cachesearch store:
    a directory, a missing file a reader asked for, a file that is not SQLite, or a SQLite database of
    another program. Only a read-only connection is opened, so nothing is changed, not even the
    journal mode (switching to WAL rewrites the header)."""
    if path.is_dir():
        raise DatabaseUnavailable("not_sqlite", f"{path} is a directory, not a database file")
    if not path.exists():
        if not create:
            raise DatabaseUnavailable("missing", f"no cachesearch database at {path} (run a search first, or "
                                                 "check the path)")
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        return
    if create and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseUnavailable("readonly", f"the database {path} is read-only: a search needs to write to it "
                                              "(check its permissions, or pass another --db)")
    if create and not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseUnavailable("readonly", f"the folder {path.parent} is read-only: SQLite needs to create "
                                              f"{path.name}-wal next to the database (or pass another --db)")
    if path.stat().st_size == 0:
        names: set[str] = set()
    else:
        uri = f"{path.resolve().as_uri().replace('file://', 'file:', 1)}?mode=ro"
        try:
            con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise DatabaseUnavailable("not_sqlite", f"{path} is not a SQLite database ({exc}); a cachesearch "
                                                        "store is a SQLite file or a database URL") from None
            raise DatabaseUnavailable("error", f"cannot read {path}: {exc}") from None
    check_tables(names, f"the database {path}", create)


def make_engine(url: str | URL, *, create: bool = True, echo: bool = False) -> Engine:
    """An engine for `url`. With `create=False` a missing SQLite file is an error, not a new file.
    A SQLite file that is not a cachesearch store is refused before anything is written to it."""
    u = _parse(url)
    json_args: dict[str, Any] = {"json_serializer": codec.dumps, "json_deserializer": codec.loads}
    if not is_sqlite(u):
        return create_engine(u, echo=echo, pool_pre_ping=True, **json_args)

    path = _sqlite_file(u)
    if path is None:
        engine = create_engine(u, echo=echo, poolclass=StaticPool,
                               connect_args={"check_same_thread": False}, **json_args)
    else:
        _check_sqlite_file(path, create)
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        creator: dict[str, Any] = {}
        if not create:
            # mode=rw: a reader (the dashboard) must never recreate a database file deleted under it.
            rw_uri = f"{path.resolve().as_uri().replace('file://', 'file:', 1)}?mode=rw"
            creator["creator"] = lambda: sqlite3.connect(rw_uri, uri=True, **connect_args)
        engine = create_engine(u, echo=echo, connect_args=connect_args, **creator, **json_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None          # we emit BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path is not None:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def check_tables(names: set[str], where: str, create: bool, exclusive: bool = True) -> bool:
    """Whether the tables `names` are a cachesearch store (True) or a database that may become one
    (False, only with `create`); anything else raises naming what was found. `exclusive` (SQLite: a
    file is one program's) refuses a database holding other programs' tables; a PostgreSQL database
    may hold ours beside others'."""
    if SCHEMA_TABLE in names:
        missing = [t for t in TABLES if t not in names and t not in OPTIONAL_TABLES]
        if missing:
            raise SchemaVersionError(f"{where} is a damaged cachesearch store: tables {missing} are missing")
        return True
    ours = sorted(names & set(TABLES))
    if ours:
        raise SchemaVersionError(
            f"{where} has tables named like cachesearch's ({', '.join(ours)}) but no schema version row: it "
            "belongs to another program or a pre-release store; nothing was changed; point --db at a new file")
    if names and exclusive:
        raise DatabaseUnavailable("foreign", f"{where} belongs to another program (tables "
                                             f"{', '.join(sorted(names)[:5])}); point --db at a new file")
    if not create:
        raise DatabaseUnavailable("not_store", f"{where} holds no cachesearch store (no tables); run a search "
                                               "to create one")
    return False


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Create the tables in an empty database, or check the schema version of an existing one (and,
    when opened for writing, add the optional tables and added columns a same-version store lacks)."""
    where = _describe(engine)
    with engine.execution_options(**{WRITE_OPTION: create}).begin() as conn:
        if create and engine.dialect.name == "postgresql":
            # Several drivers may open a new database at once (a team's first searches): creating the
            # tables twice fails on PostgreSQL's catalog. A transaction-scoped advisory lock makes the
            # others wait and then find the tables (PostgreSQL DDL is transactional); SQLite's
            # BEGIN IMMEDIATE already serialises this.
            conn.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        names = set(inspect(conn).get_table_names())
        if check_tables(names, where, create, exclusive=is_sqlite(engine.url)):
            row = conn.execute(select(SchemaInfo.value).where(SchemaInfo.key == "version")).scalar()
            found = int(row) if row is not None and str(row).isdigit() else row
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{where} was written by cachesearch store schema version {found}, this cachesearch "
                    f"reads version {SCHEMA_VERSION}. Open it with the cachesearch release that wrote it "
                    f"(export what you need), or point this one at a new database file.")
            absent = [Base.metadata.tables[t] for t in OPTIONAL_TABLES if t not in names]
            if absent and create:
                Base.metadata.create_all(conn, tables=absent)
            if create:
                _add_columns(conn)
            return
        Base.metadata.create_all(conn)
        conn.execute(SchemaInfo.__table__.insert(), [
            {"key": "version", "value": str(SCHEMA_VERSION)},
            {"key": "created_by", "value": "cachesearch.store"},
        ])


def _add_columns(conn: Any) -> None:
    """`ALTER TABLE ... ADD COLUMN` for each of `models.ADDED_COLUMNS` the database lacks (additive:
    rows already stored keep their values and read the column's default)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        for name in columns:
            if name in have:
                continue
            column = Base.metadata.tables[table].c[name]
            ddl = f"ALTER TABLE {table} ADD COLUMN {name} {column.type.compile(conn.dialect)}"
            if column.server_default is not None:
                ddl += f" NOT NULL DEFAULT '{column.server_default.arg}'"
            conn.exec_driver_sql(ddl)


def missing_columns(engine: Engine) -> frozenset[str]:
    """Which of `models.ADDED_COLUMNS` the database lacks (only a store opened read-only can)."""
    with engine.connect() as conn:
        have = {c["name"] for table in ADDED_COLUMNS for c in inspect(conn).get_columns(table)}
    return frozenset(n for columns in ADDED_COLUMNS.values() for n in columns if n not in have)


def has_table(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return name in set(inspect(conn).get_table_names())


def explain_connection_error(exc: BaseException, url: URL | str, create: bool) -> StoreError:
    """A driver-level failure while opening the database as one line naming the database and the
    problem: unreachable server, authentication, read-only file."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = str(url)
    original = getattr(exc, "orig", None) or exc
    first = (str(original).strip().splitlines() or [type(original).__name__])[0]
    text = str(original).lower()
    if "readonly" in text or "read-only" in text:
        return DatabaseUnavailable("readonly", f"the database {shown} is read-only: "
                                   + ("a search needs to write to it (check the file's and its folder's "
                                      "permissions, or pass another --db)" if create else first))
    if "unable to open database file" in text:
        return DatabaseUnavailable("error", f"cannot open the database {shown}: {first} (check that the "
                                            "folder exists and is writable)")
    return DatabaseUnavailable("unreachable", f"cannot connect to the database {shown}: {first}")


def _describe(engine: Engine) -> str:
    url = engine.url
    path = _sqlite_file(url) if is_sqlite(url) else None
    if path is not None:
        return f"the database {path}"
    return f"the database {url.render_as_string(hide_password=True)}"
