"""The tests every service runs on its Alembic migrations, written once.

A service's test module subclasses :class:`MigrationsContract` and says where its migrations are,
which metadata its models declare, and which rows to write at which revision::

    class TestMigrations(MigrationsContract):
        script_location = MIGRATIONS
        metadata = Base.metadata
        rows = {"0002": {"orders": [{...}]}}

The tests prove that ``alembic upgrade head`` on an empty database leaves nothing for
``alembic check`` to report, that the migrated schema is the one the models create (down to the
names of check constraints, which ``alembic check`` does not compare), that rows written at the
first revisions survive the upgrade to head, and that the migrations undo cleanly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, insert, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicekit.migrations import alembic_config, upgrade

Row = dict[str, Any]
RowsByTable = Mapping[str, Sequence[Row]]

_FIRST_WRITTEN = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def messaging_rows() -> dict[str, list[Row]]:
    """An outbox and an inbox row as the first revision's tables take them."""
    return {
        "outbox": [
            {
                "event_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
                "event_type": "test.happened",
                "payload": {"n": 1},
                "headers": {"x-correlation-id": "c-1"},
                "created_at": _FIRST_WRITTEN,
                "attempts": 2,
                "last_error": "no route",
            }
        ],
        "inbox": [
            {
                "consumer": "test.consumer",
                "message_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
                "received_at": _FIRST_WRITTEN,
            }
        ],
    }


def revisions(script_location: str) -> list[str]:
    """The revision ids from the first to the head, in the order they apply."""
    config = Config()
    config.set_main_option("script_location", script_location)
    script = ScriptDirectory.from_config(config)
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def schema(url: str) -> dict[str, dict[str, Any]]:
    """What a database holds, table by table, in a form two databases can be compared in.

    Columns are compared by name, not position: a column added by a later revision sits after
    the ones a fresh table declares before it, which changes nothing a query sees.
    """
    return asyncio.run(_run_sync(url, _describe))


def insert_rows(url: str, rows: RowsByTable) -> None:
    """Insert rows into the tables as they are in that database right now."""

    def write(conn: Connection) -> None:
        for name, table_rows in rows.items():
            table = Table(name, MetaData(), autoload_with=conn)
            conn.execute(insert(table), list(table_rows))
        conn.commit()

    asyncio.run(_run_sync(url, write))


def read_rows(url: str, tables: Sequence[str]) -> dict[str, list[Row]]:
    """Every row of these tables, as dicts of all their columns."""

    def read(conn: Connection) -> dict[str, list[Row]]:
        found: dict[str, list[Row]] = {}
        for name in tables:
            table = Table(name, MetaData(), autoload_with=conn)
            found[name] = [dict(row._mapping) for row in conn.execute(select(table))]
        return found

    return asyncio.run(_run_sync(url, read))


def missing_rows(written: RowsByTable, found: Mapping[str, Sequence[Row]]) -> list[str]:
    """The written rows that no row found holds with the same values (an empty list: all kept)."""
    missing = []
    for table, table_rows in written.items():
        for row in table_rows:
            if not any(_holds(candidate, row) for candidate in found.get(table, [])):
                missing.append(f"{table}: {row}")
    return missing


class MigrationsContract:
    """Subclass as ``TestMigrations`` in a service's tests; see the module docstring."""

    script_location: ClassVar[str]
    metadata: ClassVar[MetaData]
    # revision → table → rows to insert once the database is at that revision
    rows: ClassVar[Mapping[str, RowsByTable]] = {}

    @property
    def _name(self) -> str:
        return self.script_location.partition(":")[0]

    def _rows_by_revision(self) -> dict[str, dict[str, list[Row]]]:
        first = revisions(self.script_location)[0]
        merged: dict[str, dict[str, list[Row]]] = {first: messaging_rows()}
        for revision, by_table in self.rows.items():
            for table, table_rows in by_table.items():
                merged.setdefault(revision, {}).setdefault(table, []).extend(table_rows)
        return merged

    def check_rows_at_head(self, found: Mapping[str, Sequence[Row]]) -> None:
        """Override to check what later revisions did to the rows (new columns, defaults)."""

    def test_alembic_check_finds_nothing_after_upgrade_head(
        self, database_factory: Callable[[str], str]
    ) -> None:
        url = database_factory(f"{self._name}_check")
        upgrade(script_location=self.script_location, database_url=url)

        # Raises AutogenerateDiffsDetected, listing the differences, if there are any.
        command.check(alembic_config(script_location=self.script_location, database_url=url))

    def test_the_migrated_schema_is_the_one_the_models_create(
        self, database_factory: Callable[[str], str]
    ) -> None:
        migrated = database_factory(f"{self._name}_migrated")
        upgrade(script_location=self.script_location, database_url=migrated)
        created = database_factory(f"{self._name}_created")
        asyncio.run(_run_sync(created, self._create_all))

        found, wanted = schema(migrated), schema(created)
        del found["alembic_version"]

        assert found.keys() == wanted.keys()
        for table, description in wanted.items():
            assert found[table] == description, table

    def test_rows_written_at_the_first_revisions_survive_upgrade_head(
        self, database_factory: Callable[[str], str]
    ) -> None:
        url = database_factory(f"{self._name}_rows")
        config = alembic_config(script_location=self.script_location, database_url=url)
        written = self._rows_by_revision()
        for revision in revisions(self.script_location):
            command.upgrade(config, revision)
            if revision in written:
                insert_rows(url, written[revision])
        command.upgrade(config, "head")

        tables = sorted({table for by_table in written.values() for table in by_table})
        found = read_rows(url, tables)
        assert missing_rows(_by_table(written.values()), found) == []
        # Rows from before the outbox had available_at are due at once, not never.
        now = dt.datetime.now(dt.UTC)
        assert all(row["available_at"] <= now for row in found["outbox"])
        self.check_rows_at_head(found)

    def test_downgrade_to_nothing_and_upgrade_again(
        self, database_factory: Callable[[str], str]
    ) -> None:
        url = database_factory(f"{self._name}_downgrade")
        upgrade(script_location=self.script_location, database_url=url)
        config = alembic_config(script_location=self.script_location, database_url=url)
        at_head = schema(url)

        command.downgrade(config, "base")
        assert set(schema(url)) == {"alembic_version"}
        command.upgrade(config, "head")
        assert schema(url) == at_head

    def _create_all(self, conn: Connection) -> None:
        self.metadata.create_all(conn)
        conn.commit()


def _by_table(groups: Iterable[RowsByTable]) -> dict[str, list[Row]]:
    merged: dict[str, list[Row]] = {}
    for by_table in groups:
        for table, table_rows in by_table.items():
            merged.setdefault(table, []).extend(table_rows)
    return merged


def _holds(candidate: Row, written: Row) -> bool:
    return all(candidate.get(column) == value for column, value in written.items())


async def _run_sync(url: str, fn: Callable[[Connection], Any]) -> Any:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _describe(conn: Connection) -> dict[str, dict[str, Any]]:
    inspector = inspect(conn)
    tables: dict[str, dict[str, Any]] = {}
    for name in inspector.get_table_names():
        columns = {
            column["name"]: (
                str(column["type"].compile(conn.dialect)),
                column["nullable"],
                column.get("default"),
                bool(column.get("identity")),
            )
            for column in inspector.get_columns(name)
        }
        pk = inspector.get_pk_constraint(name)
        tables[name] = {
            "columns": columns,
            "primary key": (pk["name"], tuple(pk["constrained_columns"])),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(name)
            ),
            "foreign keys": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    tuple(sorted(fk.get("options", {}).items())),
                )
                for fk in inspector.get_foreign_keys(name)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(name)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    i["unique"],
                    str(i.get("dialect_options", {}).get("postgresql_where")),
                )
                for i in inspector.get_indexes(name)
            ),
        }
    return tables
