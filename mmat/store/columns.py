"""Python rows -> Arrow tables with the exact column types of a store table.

Why Arrow: the writer inserts a whole batch with one ``INSERT ... SELECT`` from an Arrow table, which is
~100x faster than ``executemany`` and keeps nested types (``STRUCT(...)[]``, ``VARCHAR[]``,
``FLOAT[384]``) intact. The column types come from DuckDB itself, so the schema lives in one place
(:mod:`mmat.store.schema`).

JSON columns -- also JSON fields nested in STRUCTs and lists, such as ``steps.tool_calls[].arguments`` --
take any JSON-able Python value (dict, list, str, number, bool, pydantic model) and are serialized here:
``None`` is SQL NULL, every other value is encoded, so a ``str`` becomes a JSON string. Callers hand
over values, never pre-encoded text; reading back gives JSON text for ``json.loads``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import duckdb
from duckdb.sqltypes import DuckDBPyType
import pyarrow as pa

from mmat.errors import StoreError

__all__ = ["TableSpec", "to_json_text", "from_json_text"]

Encoder = Callable[[Any], Any]


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # pydantic models (tool calls, specs, verdicts)
        return value.model_dump(mode="json")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON-serializable")


def from_json_text(value: Any) -> Any:
    """A JSON column's value as Python: ``Store.sql`` returns JSON columns as text; text that is not JSON
    (a plain string column, an old row) is returned as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def to_json_text(value: Any) -> str | None:
    """JSON text for a JSON column; NaN/inf are refused because DuckDB's JSON cannot hold them."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_default)


def _is_json(t: DuckDBPyType) -> bool:
    return str(t) == "JSON"


def _child_types(t: DuckDBPyType) -> list[tuple[str, DuckDBPyType]]:
    return [(name, child) for name, child in t.children if not isinstance(child, int)]


def _encoder(t: DuckDBPyType, where: str) -> Encoder | None:
    """A function that prepares one Python value for ``pa.array``; None when no preparation is needed."""
    if _is_json(t):
        return to_json_text
    if t.id in ("list", "array"):
        inner = _encoder(_child_types(t)[0][1], where)
        if inner is None:
            return None
        return lambda v: None if v is None else [inner(x) for x in v]
    if t.id == "struct":
        fields = {name: _encoder(child, f"{where}.{name}") for name, child in _child_types(t)}
        return _struct_encoder(fields, where)
    if t.id == "map":
        (_, key_t), (_, value_t) = _child_types(t)
        enc_k, enc_v = _encoder(key_t, where), _encoder(value_t, where)
        if enc_k is None and enc_v is None:
            return None
        enc_k, enc_v = enc_k or (lambda x: x), enc_v or (lambda x: x)
        return lambda v: None if v is None else [(enc_k(k), enc_v(x)) for k, x in dict(v).items()]
    return None


def _struct_encoder(fields: dict[str, Encoder | None], where: str) -> Encoder:
    # Always checked, even without JSON inside: pyarrow silently drops unknown keys of a struct.
    names = set(fields)

    def encode(value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        if not isinstance(value, Mapping):
            raise StoreError(f"{where}: expected a dict with keys {sorted(names)}, got {type(value).__name__}")
        unknown = set(value) - names
        if unknown:
            raise StoreError(f"{where} has no field(s) {sorted(unknown)}: use only {sorted(names)}")
        return {k: (enc(value.get(k)) if enc else value.get(k)) for k, enc in fields.items()}

    return encode


@dataclass(frozen=True)
class TableSpec:
    """What the writer needs to know about one table: its columns, Arrow schema and primary key."""

    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    encoders: Mapping[str, Encoder | None]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @classmethod
    def read(cls, cursor: duckdb.DuckDBPyConnection, table: str) -> "TableSpec":
        """Read the spec from the database (the arrow schema is DuckDB's own export of the table)."""
        found = cursor.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
        ).fetchall()[0][0]
        if not found:
            known = [r[0] for r in cursor.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
            raise StoreError(f"the store has no table {table!r}: use one of {known}")
        rel = cursor.table(table)
        encoders = {col: _encoder(t, f"{table}.{col}") for col, t in zip(rel.columns, rel.types)}
        schema = cursor.sql(f'SELECT * FROM "{table}" LIMIT 0').to_arrow_table().schema
        pk_rows = cursor.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [table],
        ).fetchall()
        primary_key = tuple(pk_rows[0][0]) if pk_rows else ()
        return cls(table, schema, primary_key, encoders)

    def check_columns(self, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - set(self.columns))
        if unknown:
            raise StoreError(f"table {self.name} has no column(s) {unknown}: its columns are {list(self.columns)}")

    def rows_to_arrow(self, rows: list[Mapping[str, Any]]) -> pa.Table:
        """All columns of the table, in table order; columns missing from a row are NULL."""
        keys: set[str] = set()
        for row in rows:
            if not isinstance(row, Mapping):
                raise StoreError(f"rows for {self.name} must be dicts, got {type(row).__name__}")
            keys.update(row)
        self.check_columns(keys)
        arrays = []
        for field in self.schema:
            values = [row.get(field.name) for row in rows]
            encode = self.encoders[field.name]
            if encode is not None:
                values = [_encode_one(encode, v, self.name, field) for v in values]
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
                bad = _short(_first_bad(values, field.type))
                raise StoreError(
                    f"{self.name}.{field.name}: cannot store {bad} as {field.type} ({e}): pass a value of that type"
                ) from None
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def conform(self, table: pa.Table) -> pa.Table:
        """An Arrow table with exactly this table's columns and types (missing columns become NULL).

        JSON columns must already hold JSON text here: this is the bulk path, it does not look at values.
        """
        self.check_columns(table.column_names)
        arrays = []
        for field in self.schema:
            if field.name not in table.column_names:
                arrays.append(pa.nulls(table.num_rows, field.type))
                continue
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowException, TypeError, ValueError) as e:
                    raise StoreError(
                        f"{self.name}.{field.name}: cannot cast {column.type} to {field.type} ({e}): "
                        "build that column with the table's type"
                    ) from None
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _encode_one(encode: Encoder, value: Any, table: str, field: pa.Field) -> Any:
    try:
        return encode(value)
    except StoreError:
        raise
    except (TypeError, ValueError) as e:  # json.dumps: unserializable object, NaN/inf
        raise StoreError(
            f"{table}.{field.name}: cannot store {_short(value)} ({e}): pass JSON-able values (finite numbers)"
        ) from None


def _first_bad(values: list[Any], arrow_type: pa.DataType) -> Any:
    """The first value pyarrow refuses, so the error message shows the culprit, not the whole column."""
    for v in values:
        try:
            pa.array([v], type=arrow_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return v
    return values[:3]


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
