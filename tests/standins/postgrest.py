"""A local stand-in for the PostgREST endpoints that supabase-py's table API uses.

It serves `GET/HEAD/POST/PATCH/DELETE /rest/v1/{table}` over a real PostgreSQL schema, so defaults,
constraints, `timestamptz` and `jsonb` behave as they do behind Supabase, and constraint errors come
back in PostgREST's error JSON (`{"code","message","details","hint"}`) with PostgREST's statuses.
Supported query syntax: `select` (column lists), filters `eq neq gt gte lt lte is in` (and `not.`),
`order`, `limit`, `offset`, `on_conflict`, `columns`; `Prefer: return=`, `resolution=`, `missing=`,
`count=exact`. Every request runs in its own transaction, as PostgREST does. `max_rows` cuts every
read at that many rows, as PostgREST's `db-max-rows` setting does (Supabase: 1000 by default).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import uvicorn
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED_PARAMS = {"select", "order", "limit", "offset", "on_conflict", "columns"}


class PostgrestError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.hint = status, code, message, details, hint

    def response(self) -> JSONResponse:
        body = {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        return JSONResponse(body, status_code=self.status)


# PostgREST's mapping of SQLSTATE classes to HTTP statuses (the subset a table API can hit).
def _status_of(sqlstate: str) -> int:
    if sqlstate in ("23505", "23503"):
        return 409
    if sqlstate in ("42P01", "42883"):
        return 404
    if sqlstate.startswith(("22", "23", "42")):
        return 400
    return 500


def _split_list(text: str) -> list[str]:
    """Values of `in.(a,"b,c",d)`: commas split, double quotes group, backslash escapes."""
    values, current, quoted, escaped, was_quoted = [], [], False, False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted, was_quoted = not quoted, True
        elif char == "," and not quoted:
            values.append("".join(current) if was_quoted else "".join(current).strip())
            current, was_quoted = [], False
        else:
            current.append(char)
    values.append("".join(current) if was_quoted else "".join(current).strip())
    return values


class _Table:
    def __init__(self, name: str, columns: dict[str, str], primary_key: list[str]) -> None:
        self.name, self.columns, self.primary_key = name, columns, primary_key

    def column(self, name: str) -> sql.Identifier:
        if name not in self.columns:
            raise PostgrestError(
                400, "42703", f"column {self.name}.{name} does not exist", hint="Perhaps you meant another column."
            )
        return sql.Identifier(name)

    def value(self, column: str, value: Any) -> Any:
        """A JSON body value as psycopg should bind it for this column."""
        if self.columns[column] in ("json", "jsonb") and value is not None:
            return Jsonb(value)
        return value


class PostgrestStandIn:
    """Serves PostgREST over the PostgreSQL database `db_url` on a free loopback port, in a thread."""

    def __init__(self, db_url: str, api_key: str, *, max_rows: int | None = None) -> None:
        self.db_url = db_url
        self.api_key = api_key
        self.max_rows = max_rows
        self.requests: list[tuple[str, str, int]] = []  # (method, path?query, status) as seen on the wire
        self._tables: dict[str, _Table] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[psycopg.Connection[Any]] = []
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        app = Starlette(
            routes=[Route("/rest/v1/{table}", self._handle, methods=["GET", "HEAD", "POST", "PATCH", "DELETE"])]
        )
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> PostgrestStandIn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the PostgREST stand-in did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        for conn in self._connections:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        """One connection per worker thread, kept for the stand-in's life (connecting costs ~10 ms)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    # -- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        response = await self._respond(request)
        self.requests.append((request.method, f"{request.url.path}?{request.url.query}", response.status_code))
        return response

    async def _respond(self, request: Request) -> Response:
        if request.headers.get("apikey") != self.api_key:
            return JSONResponse(
                {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."},
                status_code=401,
            )
        body: Any = None
        if request.method in ("POST", "PATCH"):
            try:
                body = json.loads(await request.body())
            except ValueError:
                return PostgrestError(400, "PGRST102", "Empty or invalid json").response()
        try:
            return await run_in_threadpool(self._run, request, body)
        except PostgrestError as error:
            return error.response()

    def _run(self, request: Request, body: Any) -> Response:
        prefer = {p.strip() for p in request.headers.get("prefer", "").split(",") if p.strip()}
        params = list(request.query_params.multi_items())
        conn = self._connection()
        with conn.transaction():
            table = self._table(conn, request.path_params["table"])
            try:
                if request.method in ("GET", "HEAD"):
                    rows, total = self._select(conn, table, params, "count=exact" in prefer)
                    headers = {}
                    if total is not None:
                        offset = int(dict(params).get("offset", 0))
                        span = f"{offset}-{offset + len(rows) - 1}" if rows else "*"
                        headers["Content-Range"] = f"{span}/{total}"
                    return self._rows(rows, 200, headers, body=request.method == "GET")
                representation = "return=representation" in prefer
                if request.method == "POST":
                    rows = self._insert(conn, table, params, body, prefer)
                    return self._rows(rows, 201, {}, body=representation)
                if request.method == "PATCH":
                    if not isinstance(body, dict):
                        raise PostgrestError(400, "PGRST102", "A PATCH body must be one JSON object")
                    rows = self._update(conn, table, params, body)
                else:
                    rows = self._delete(conn, table, params)
                return self._rows(rows, 200 if representation else 204, {}, body=representation)
            except psycopg.Error as error:
                diag = error.diag
                code = error.sqlstate or "XX000"
                raise PostgrestError(
                    _status_of(code), code, diag.message_primary or str(error), diag.message_detail, diag.message_hint
                ) from error

    @staticmethod
    def _rows(rows: list[dict[str, Any]], status: int, headers: dict[str, str], *, body: bool) -> Response:
        if not body:
            return Response(status_code=status, headers=headers)
        return Response(
            json.dumps(rows, default=_json_default), status_code=status, headers=headers, media_type="application/json"
        )

    # -- SQL ---------------------------------------------------------------------------------------
    def _table(self, conn: psycopg.Connection[Any], name: str) -> _Table:
        if name in self._tables:
            return self._tables[name]
        rows = conn.execute(
            "SELECT column_name, data_type, udt_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (name,),
        ).fetchall()
        if not rows:
            raise PostgrestError(
                404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache", hint=None
            )
        pk = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
            (name,),
        ).fetchall()
        table = _Table(name, {r["column_name"]: r["udt_name"] for r in rows}, [r["attname"] for r in pk])
        self._tables[name] = table  # the schema is fixed while a stand-in runs
        return table

    def _filters(self, table: _Table, params: list[tuple[str, str]]) -> sql.Composable:
        clauses: list[sql.Composable] = []
        for key, raw in params:
            if key in _RESERVED_PARAMS:
                continue
            column = table.column(key)
            negate = raw.startswith("not.")
            operator, _, operand = raw.removeprefix("not.").partition(".")
            if operator in _OPERATORS:
                clause: sql.Composable = sql.SQL("{} {} {}").format(
                    column, sql.SQL(_OPERATORS[operator]), sql.Literal(operand)
                )
            elif operator == "in" and operand.startswith("(") and operand.endswith(")"):
                values = _split_list(operand[1:-1])
                clause = sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(sql.Literal(v) for v in values))
            elif operator == "is" and operand in ("null", "true", "false"):
                clause = sql.SQL("{} IS {}").format(column, sql.SQL(operand.upper()))
            else:
                raise PostgrestError(400, "PGRST100", f'"failed to parse filter ({raw})" (line 1, column 1)')
            clauses.append(sql.SQL("NOT ({})").format(clause) if negate else clause)
        if not clauses:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)

    def _returning(self, table: _Table, params: list[tuple[str, str]]) -> sql.Composable:
        selected = dict(params).get("select", "*")
        if selected.strip() == "*":
            return sql.SQL("*")
        return sql.SQL(", ").join(table.column(c.strip()) for c in selected.split(",") if c.strip())

    def _select(
        self, conn: psycopg.Connection[Any], table: _Table, params: list[tuple[str, str]], count: bool
    ) -> tuple[list[dict[str, Any]], int | None]:
        where = self._filters(table, params)
        query = sql.SQL("SELECT {} FROM {}{}").format(self._returning(table, params), sql.Identifier(table.name), where)
        options = dict(params)
        if "order" in options:
            terms = []
            for term in options["order"].split(","):
                name, *modifiers = term.split(".")
                direction = sql.SQL(" DESC" if "desc" in modifiers else " ASC")
                nulls = sql.SQL(
                    " NULLS FIRST" if "nullsfirst" in modifiers else " NULLS LAST" if "nullslast" in modifiers else ""
                )
                terms.append(table.column(name) + direction + nulls)
            query += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)
        bounds: dict[str, int] = {}
        for keyword in ("limit", "offset"):
            if keyword in options:
                if not options[keyword].isdigit():
                    raise PostgrestError(400, "PGRST100", f'"failed to parse {keyword} ({options[keyword]})"')
                bounds[keyword] = int(options[keyword])
        if self.max_rows is not None:
            bounds["limit"] = min(bounds.get("limit", self.max_rows), self.max_rows)
        for keyword in ("limit", "offset"):
            if keyword in bounds:
                query += sql.SQL(f" {keyword.upper()} ") + sql.Literal(bounds[keyword])
        rows = conn.execute(query).fetchall()
        total = None
        if count:
            total = conn.execute(
                sql.SQL("SELECT COUNT(*) AS n FROM {}{}").format(sql.Identifier(table.name), where)
            ).fetchone()["n"]
        return rows, total

    def _insert(
        self, conn: psycopg.Connection[Any], table: _Table, params: list[tuple[str, str]], body: Any, prefer: set[str]
    ) -> list[dict[str, Any]]:
        payload = body if isinstance(body, list) else [body]
        if not all(isinstance(row, dict) for row in payload):
            raise PostgrestError(400, "PGRST102", "All object keys must match")
        options = dict(params)
        names = _split_list(options["columns"]) if "columns" in options else sorted({k for r in payload for k in r})
        columns = [table.column(n) for n in names]
        use_default = "missing=default" in prefer
        conflict = None
        if "resolution=merge-duplicates" in prefer or "resolution=ignore-duplicates" in prefer:
            targets = [c.strip() for c in options.get("on_conflict", ",".join(table.primary_key)).split(",")]
            target_sql = sql.SQL(", ").join(table.column(t) for t in targets)
            if "resolution=ignore-duplicates" in prefer:
                conflict = sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(target_sql)
            else:
                updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names)
                conflict = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(target_sql, updates)
        returned: list[dict[str, Any]] = []
        if not payload:
            return returned
        for row in payload:
            values = [sql.Placeholder() if n in row else sql.SQL("DEFAULT" if use_default else "NULL") for n in names]
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({}){} RETURNING {}").format(
                sql.Identifier(table.name),
                sql.SQL(", ").join(columns),
                sql.SQL(", ").join(values),
                conflict or sql.SQL(""),
                self._returning(table, params),
            )
            result = conn.execute(query, [table.value(n, row[n]) for n in names if n in row]).fetchone()
            if result is not None:
                returned.append(result)
        return returned

    def _update(
        self, conn: psycopg.Connection[Any], table: _Table, params: list[tuple[str, str]], body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if not body:
            return []
        assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(table.column(k), sql.Placeholder()) for k in body)
        query = sql.SQL("UPDATE {} SET {}{} RETURNING {}").format(
            sql.Identifier(table.name), assignments, self._filters(table, params), self._returning(table, params)
        )
        return conn.execute(query, [table.value(k, v) for k, v in body.items()]).fetchall()

    def _delete(
        self, conn: psycopg.Connection[Any], table: _Table, params: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        query = sql.SQL("DELETE FROM {}{} RETURNING {}").format(
            sql.Identifier(table.name), self._filters(table, params), self._returning(table, params)
        )
        return conn.execute(query).fetchall()


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):  # PostgREST sends numeric as a JSON number
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
