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

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from . import codec
from .errors import SchemaVersionError, StoreError
from .models import SCHEMA_TABLE, SCHEMA_VERSION, TABLES, Base, SchemaInfo

BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "cachesearch_write"   # execution option marking a connection that will write


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def make_engine(url: str | URL, *, create: bool = True, echo: bool = False) -> Engine:
    """An engine for `url`. With `create=False` a missing SQLite file is an error, not a new file."""
    u = make_url(url)
    json_args: dict[str, Any] = {"json_serializer": codec.dumps, "json_deserializer": codec.loads}
    if not is_sqlite(u):
        return create_engine(u, echo=echo, pool_pre_ping=True, **json_args)

    path = _sqlite_file(u)
    if path is None:
        engine = create_engine(u, echo=echo, poolclass=StaticPool,
                               connect_args={"check_same_thread": False}, **json_args)
    else:
        if not path.exists():
            if not create:
                raise StoreError(f"no cachesearch database at {path} (run a search first, or check the path)")
            path.parent.mkdir(parents=True, exist_ok=True)
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


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Create the tables in an empty database, or check the schema version of an existing one."""
    where = _describe(engine)
    with engine.execution_options(**{WRITE_OPTION: create}).begin() as conn:
        names = set(inspect(conn).get_table_names())
        if SCHEMA_TABLE in names:
            row = conn.execute(select(SchemaInfo.value).where(SchemaInfo.key == "version")).scalar()
            found = int(row) if row is not None and str(row).isdigit() else row
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{where} was written by cachesearch store schema version {found}, this cachesearch "
                    f"reads version {SCHEMA_VERSION}. Open it with the cachesearch release that wrote it "
                    f"(export what you need), or point this one at a new database file.")
            missing = [t for t in TABLES if t not in names]
            if missing:
                raise SchemaVersionError(f"{where} is a damaged cachesearch store: tables {missing} are missing")
            return
        ours = sorted(names & set(TABLES))
        if ours:
            raise SchemaVersionError(
                f"{where} has cachesearch tables {ours} but no schema version row: it was written by a "
                "pre-release store or another program; use a new database file")
        if not create:
            raise StoreError(f"{where} holds no cachesearch store (no tables); run a search to create one")
        Base.metadata.create_all(conn)
        conn.execute(SchemaInfo.__table__.insert(), [
            {"key": "version", "value": str(SCHEMA_VERSION)},
            {"key": "created_by", "value": "cachesearch.store"},
        ])


def _describe(engine: Engine) -> str:
    url = engine.url
    path = _sqlite_file(url) if is_sqlite(url) else None
    if path is not None:
        return f"the database {path}"
    return f"the database {url.render_as_string(hide_password=True)}"
