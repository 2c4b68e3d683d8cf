"""Read-only queries: which statements count as reads, and how a read runs on a DuckDB cursor.

The same rule applies whether the query runs on a read-only open of the file or inside the writing
process for a reader on the socket (:mod:`mmat.store.readserver`): exactly one statement, of a kind
that cannot change the database, run inside a ``READ ONLY`` transaction so that even a statement that
slips through cannot write. Results are Arrow tables with DuckDB's lossless conversion on, so JSON
columns (top-level and nested in structs and lists) keep their ``arrow.json`` type and can be decoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mmat.errors import StoreError
from mmat.store.dberrors import one_line, sql_error

__all__ = ["READ_STATEMENTS", "check_read_query", "run_read_query", "table_rows"]

Params = Sequence[Any] | Mapping[str, Any] | None

# SELECT covers SHOW, DESCRIBE and SUMMARIZE; COPY is allowed for COPY (...) TO a file (COPY FROM is
# a write, which the read-only transaction refuses).
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.COPY})
_SHOWN = 120  # characters of a refused query quoted back


def check_read_query(query: str) -> None:
    """Refuse anything but exactly one read statement, with a message that says what to do."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise StoreError(f"SQL failed: {one_line(e)}: fix the query (list the tables with SHOW TABLES)") from None
    if not statements:
        raise StoreError("the query is empty: pass one SQL statement, e.g. \"select count(*) from tasks\"")
    if len(statements) > 1:
        raise StoreError(
            f"{len(statements)} statements given ({_short(query)}): mmat runs one statement per query; "
            "run them one at a time"
        )
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        name = str(kind).rsplit(".", 1)[-1]
        raise StoreError(
            f"{name} is not a read: this path only reads the store (SELECT, SHOW, DESCRIBE, EXPLAIN, COPY ... TO); "
            "writes go through mmat's commands"
        )


def run_read_query(cursor: duckdb.DuckDBPyConnection, query: str, params: Params = None) -> pa.Table:
    """Run one checked read statement on ``cursor`` (its own connection) and return an Arrow table."""
    check_read_query(query)
    try:
        cursor.execute("SET SESSION arrow_lossless_conversion = true")  # this cursor only
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        try:
            relation = cursor.sql(query, params=params)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
        finally:
            cursor.execute("ROLLBACK")
    except duckdb.Error as e:
        raise sql_error(e) from None
    return _plain_integers(table)


_WIDE_INTEGERS = {"hugeint": True, "uhugeint": False}  # DuckDB type name -> signed


def _plain_integers(table: pa.Table) -> pa.Table:
    """Lossless conversion (kept for JSON columns) ships HUGEINT — every ``sum()`` of integers — as opaque
    16-byte values; give them back as the decimal(38, 0) DuckDB's own Arrow export uses, so readers see numbers."""
    from decimal import Decimal

    for i, field in enumerate(table.schema):
        name = getattr(field.type, "type_name", None)
        if name not in _WIDE_INTEGERS:
            continue
        storage = table.column(i).combine_chunks()
        storage = storage.storage if hasattr(storage, "storage") else storage
        values = [None if v is None else Decimal(int.from_bytes(v, "little", signed=_WIDE_INTEGERS[name]))
                  for v in storage.to_pylist()]
        # 38 digits hold every sum a store will see; the extreme HUGEINTs (39 digits) need decimal256
        wide = any(v is not None and abs(v) >= 10**38 for v in values)
        kind = pa.decimal256(39, 0) if wide else pa.decimal128(38, 0)
        table = table.set_column(i, pa.field(field.name, kind), pa.array(values, kind))
    return table


def table_rows(table: pa.Table, *, parse_json: bool = True) -> list[dict[str, Any]]:
    """Rows of an Arrow result as dicts; with ``parse_json`` JSON values (also nested ones) are decoded."""
    rows = table.to_pylist()
    if not parse_json:
        return rows
    decoders = {f.name: _decoder(f.type) for f in table.schema}
    active = {name: d for name, d in decoders.items() if d is not None}
    if not active:
        return rows
    for row in rows:
        for name, decode in active.items():
            row[name] = decode(row[name])
    return rows


def _decoder(arrow_type: pa.DataType):
    """A function that decodes the JSON inside values of ``arrow_type`` (None: nothing to decode)."""
    if isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.json":
        return lambda v: None if v is None else _loads(v)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        inner = _decoder(arrow_type.value_type)
        return None if inner is None else (lambda v: None if v is None else [inner(x) for x in v])
    if pa.types.is_struct(arrow_type):
        fields = {arrow_type.field(i).name: _decoder(arrow_type.field(i).type) for i in range(arrow_type.num_fields)}
        fields = {k: d for k, d in fields.items() if d is not None}
        if not fields:
            return None
        return lambda v: None if v is None else {k: (fields[k](x) if k in fields else x) for k, x in v.items()}
    return None


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):  # not valid JSON after all: keep the text rather than fail the read
        return text


def _short(query: str) -> str:
    flat = " ".join(query.split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 1] + "…"
