"""Set-based building blocks of the periodic jobs: a handful of SQL statements whatever the
row count, the same on SQLite and PostgreSQL.

- `job_lock` serialises two runs of the same job (a transaction-scoped advisory lock on
  PostgreSQL; SQLite serialises writers by itself).
- `Batch` snapshots (and on PostgreSQL row-locks) the rows a job works on into a temporary
  table, so every following statement sees exactly the same set.
- `post_moves` writes balanced ledger transactions for a set of moves selected in SQL and
  moves the balance projection with them, never loading the moves into Python.
- `post_each` writes many small transactions computed in Python, each exactly as
  `ledger.services.post` would, with three statements whatever their number.
- `insert_rows` inserts rows given as one array per column (PostgreSQL); `create_rows` is the
  same on either database, and `update_rows` the UPDATE of many rows by primary key.
"""
import json
import uuid
from collections import defaultdict

from django.db import connection
from django.db.models import Lookup
from django.db.models.lookups import In
from django.utils import timezone

from ledger.models import ACCOUNT_BOOKS, Balance, Entry, Transaction
from ledger.services import UnbalancedTransaction

# Moves per ledger transaction. Every move balances on its own (its two legs, or its account
# leg against the chunk's platform leg), so any split is balanced. PostgreSQL checks each
# ledger transaction's balance once at commit (ledger/0003), so the size no longer costs
# quadratically; 25 and 1,000 measured alike (bench/jobs.py --chunk), and small transactions
# keep the statement pages' per-transaction rows short.
CHUNK = 25

_ACCOUNT_BOOKS_SQL = "(" + ", ".join(f"'{b}'" for b in ACCOUNT_BOOKS) + ")"


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def job_lock(name: str) -> None:
    """Block until no other transaction runs job `name`; released at commit or rollback."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"referrals.job:{name}"])


def lock_clause(alias: str) -> str:
    return f" FOR UPDATE OF {alias}" if is_postgres() else ""


def db_datetime(value):
    """A datetime as the database stores it, for raw SQL parameters."""
    return connection.ops.adapt_datetimefield_value(value)


def sql(statement: str, /, **names) -> str:
    """Fill `{name}` slots of a SQL template with identifiers and SQL fragments we generate
    (table names, lock clauses), never with values: values always go as parameters."""
    return statement.format(**{k: getattr(v, "name", v) for k, v in names.items()}) if names else statement


def table(model) -> str:
    return model._meta.db_table


def execute(statement: str, params=(), /, **names) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql(statement, **names), list(params))
        return cursor.rowcount


def scalar(statement: str, params=(), /, **names):
    with connection.cursor() as cursor:
        cursor.execute(sql(statement, **names), list(params))
        row = cursor.fetchone()
    return row[0] if row else None


def rows(statement: str, params=(), /, **names):
    """Iterate a result in chunks rather than materialising it."""
    with connection.cursor() as cursor:
        cursor.execute(sql(statement, **names), list(params))
        while chunk := cursor.fetchmany(2000):
            yield from chunk


class Batch:
    """A temporary table holding the result of a SELECT, dropped on exit.

        with Batch("ready", sql, params) as batch:
            batch.count ... f"SELECT ... FROM {batch.name}"
    """

    def __init__(self, label: str, select: str, params=()):
        self.name = f"tmp_{label}_{uuid.uuid4().hex[:12]}"
        self.select = select
        self.params = list(params)
        self.count = 0

    def __enter__(self) -> "Batch":
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE " + self.name + " AS " + self.select, self.params)
        self.count = int(scalar("SELECT COUNT(*) FROM {t}", t=self.name) or 0)
        if is_postgres() and self.count > 1000:
            # Temporary tables get no statistics by themselves; the joins that follow need them.
            execute("ANALYZE {t}", t=self.name)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # On an error the table goes with the rollback of the transaction that created it.
        if exc_type is None:
            execute("DROP TABLE IF EXISTS {t}", t=self.name)


def queryset_sql(queryset) -> tuple[str, list]:
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def one_of(column: str, batch: "Batch", batch_column: str = "id") -> str:
    """A condition: `column` is one of the batch's `batch_column` values.

    On PostgreSQL as `= ANY(ARRAY(SELECT ...))`, which the planner answers with an index scan
    of `column`: `IN (SELECT ...)` is planned as a hash join over a sequential scan of the
    whole table (3M accruals, 4M balance rows at 1M accounts) to update a few thousand rows."""
    condition = "{column} = ANY(ARRAY(SELECT {of} FROM {t}))" if is_postgres() else "{column} IN (SELECT {of} FROM {t})"
    return sql(condition, column=column, of=batch_column, t=batch)


def post_moves(*, kind: str, rule: str, event, moves_sql: str, params=()) -> int:
    """Post every move selected by `moves_sql` and update the balance projection.

    `moves_sql` selects columns (account_id, program_id, from_book, to_book, amount): `amount`
    leaves `from_book` and lands in `to_book`. Account books take the account's leg; platform
    books (`platform:*`) get one leg per ledger transaction, programme and book. Moves of zero
    are dropped. Returns how many moves were posted.
    """
    numbered = sql(
        "SELECT ROW_NUMBER() OVER (ORDER BY m.account_id, m.program_id, m.from_book, m.to_book) - 1 AS n, "
        "m.account_id, m.program_id, m.from_book, m.to_book, m.amount FROM ({moves}) m WHERE m.amount <> 0",
        moves=moves_sql)
    with Batch("moves", numbered, params) as moves:
        if not moves.count:
            return 0
        n_txns = (moves.count + CHUNK - 1) // CHUNK
        txns = Transaction.objects.bulk_create(
            [Transaction(kind=kind, rule=rule, event=event) for _ in range(n_txns)])
        chunks = f"tmp_chunks_{uuid.uuid4().hex[:12]}"
        names = {"m": moves.name, "c": chunks, "books": _ACCOUNT_BOOKS_SQL, "size": CHUNK}
        execute("CREATE TEMPORARY TABLE {c} (chunk BIGINT, txn_id BIGINT)", **names)
        with connection.cursor() as cursor:
            cursor.executemany(sql("INSERT INTO {c} (chunk, txn_id) VALUES (%s, %s)", **names),
                               [(i, t.pk) for i, t in enumerate(txns)])
        execute(
            "INSERT INTO ledger_entry (transaction_id, account_id, book, program_id, amount) "
            "SELECT c.txn_id, m.account_id, m.from_book, m.program_id, -m.amount "
            "FROM {m} m JOIN {c} c ON c.chunk = m.n / {size} WHERE m.from_book IN {books} "
            "UNION ALL SELECT c.txn_id, m.account_id, m.to_book, m.program_id, m.amount "
            "FROM {m} m JOIN {c} c ON c.chunk = m.n / {size} WHERE m.to_book IN {books} "
            "UNION ALL SELECT c.txn_id, NULL, m.from_book, m.program_id, -SUM(m.amount) "
            "FROM {m} m JOIN {c} c ON c.chunk = m.n / {size} WHERE m.from_book NOT IN {books} "
            "GROUP BY c.txn_id, m.from_book, m.program_id HAVING SUM(m.amount) <> 0 "
            "UNION ALL SELECT c.txn_id, NULL, m.to_book, m.program_id, SUM(m.amount) "
            "FROM {m} m JOIN {c} c ON c.chunk = m.n / {size} WHERE m.to_book NOT IN {books} "
            "GROUP BY c.txn_id, m.to_book, m.program_id HAVING SUM(m.amount) <> 0",
            **names)
        execute("DROP TABLE {c}", **names)
        execute(
            "UPDATE ledger_balance SET amount = ledger_balance.amount + d.delta FROM ("
            "SELECT account_id, book, SUM(delta) AS delta FROM ("
            "SELECT account_id, from_book AS book, -amount AS delta FROM {m} WHERE from_book IN {books} "
            "UNION ALL SELECT account_id, to_book AS book, amount AS delta FROM {m} WHERE to_book IN {books}"
            ") x GROUP BY account_id, book) d "
            "WHERE ledger_balance.account_id = d.account_id AND ledger_balance.book = d.book AND {accounts}",
            accounts=one_of("ledger_balance.account_id", moves, "account_id"), **names)
        return moves.count


def post_each(*, kind: str, postings: list[tuple]) -> int:
    """Write one ledger transaction per `(rule, event, legs)`, as `ledger.services.post` would
    (zero legs dropped, nothing written for none, every one checked balanced), and move the
    balance projection: one INSERT of the transactions, one of their entries and one UPDATE
    of the balances, whatever their number (`create_rows`: no model instance per row). Returns
    how many transactions were written.

    Unlike `post_moves`, each transaction keeps its own event and rule: the statement pages
    match accrual legs to their accruals through the transaction's event.
    """
    kept = []
    for rule, event, legs in postings:
        legs = [leg for leg in legs if leg.amount]
        if not legs:
            continue
        if sum(leg.amount for leg in legs) != 0:
            raise UnbalancedTransaction(f"{kind}: legs sum to {sum(leg.amount for leg in legs)}, not 0")
        if any(leg.book.startswith("platform:") != (leg.account_id is None) for leg in legs):
            raise UnbalancedTransaction(f"{kind}: a book does not match its holder")
        kept.append((rule, event, legs))
    if not kept:
        return 0
    txn_ids = create_rows(Transaction, {"rule": [rule for rule, _, _ in kept],
                                        "event_id": [event.pk if event else None for _, event, _ in kept]},
                          {"kind": kind, "memo": "", "created_at": timezone.now()})
    legs_of = [(txn_id, leg) for txn_id, (_, _, legs) in zip(txn_ids, kept, strict=True) for leg in legs]
    create_rows(Entry, {"transaction_id": [txn_id for txn_id, _ in legs_of],
                        "account_id": [leg.account_id for _, leg in legs_of],
                        "book": [leg.book for _, leg in legs_of],
                        "program_id": [leg.program_id for _, leg in legs_of],
                        "amount": [leg.amount for _, leg in legs_of]}, returning=())
    deltas: dict[tuple[int, str], int] = defaultdict(int)
    for _, _, legs in kept:
        for leg in legs:
            if leg.account_id is not None:
                deltas[(leg.account_id, leg.book)] += leg.amount
    move_balances(deltas)
    return len(kept)


def move_balances(deltas: dict[tuple[int, str], int]) -> None:
    """Add `deltas[(account_id, book)]` to the balance projection with one UPDATE."""
    deltas = {key: delta for key, delta in deltas.items() if delta}
    if not deltas:
        return
    keys = sorted(deltas)
    if is_postgres():
        # The rows are locked in (account, book) order before they are updated: two appliers
        # crediting the same referrers (two requests, a request and the task) wait for each
        # other instead of deadlocking.
        execute("WITH d AS (SELECT * FROM UNNEST(%s::bigint[], %s::varchar[], %s::bigint[]) "
                "AS d(account_id, book, delta)), "
                "locked AS MATERIALIZED (SELECT b.id FROM {balance} b JOIN d ON b.account_id = d.account_id "
                "AND b.book = d.book ORDER BY b.account_id, b.book FOR UPDATE OF b) "
                "UPDATE {balance} SET amount = {balance}.amount + d.delta FROM d, locked "
                "WHERE {balance}.id = locked.id AND {balance}.account_id = d.account_id AND {balance}.book = d.book",
                [array_text([account_id for account_id, _ in keys]), array_text([book for _, book in keys]),
                 array_text([deltas[key] for key in keys])], balance=table(Balance))
        return
    values = ", ".join(["(CAST(%s AS BIGINT), %s, CAST(%s AS BIGINT))"] * len(keys))
    execute("WITH d (account_id, book, delta) AS (VALUES {values}) "
            "UPDATE {balance} SET amount = {balance}.amount + d.delta FROM d "
            "WHERE {balance}.account_id = d.account_id AND {balance}.book = d.book",
            [value for key in keys for value in (*key, deltas[key])], values=values, balance=table(Balance))


# Rows per UPDATE of `update_rows` (bounds the statement's parameter list).
UPDATE_CHUNK = 500


def update_rows(model, objs, fields: list[str]) -> int:
    """Write `fields` of `objs` (matched by primary key) with one `UPDATE ... FROM` a VALUES list
    per `UPDATE_CHUNK` rows, on PostgreSQL and SQLite alike.

    Django's `bulk_update` builds a CASE expression per field and row; resolving those was most
    of the engine's write time. Here each row is one VALUES tuple of parameters (cast to the
    column's type on PostgreSQL, where VALUES would otherwise type them as text)."""
    objs = list(objs)
    if not objs:
        return 0
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    postgres = is_postgres()
    if postgres:
        return _update_unnest(model, objs, columns)

    def slot(field) -> str:
        return f"CAST(%s AS {field.db_type(connection)})" if postgres else "%s"

    row = "(" + ", ".join([slot(meta.pk), *(slot(field) for field in columns)]) + ")"
    names = ", ".join(["row_pk", *(f"v_{field.column}" for field in columns)])
    assignments = ", ".join(f"{field.column} = v.v_{field.column}" for field in columns)
    written = 0
    for start in range(0, len(objs), UPDATE_CHUNK):
        chunk = objs[start:start + UPDATE_CHUNK]
        params = []
        for obj in chunk:
            params.append(meta.pk.get_db_prep_value(obj.pk, connection))
            params += [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in columns]
        written += execute(
            "WITH v ({names}) AS (VALUES {rows}) UPDATE {table} SET {assignments} FROM v "
            "WHERE {table}.{pk} = v.row_pk",
            params, names=names, rows=", ".join([row] * len(chunk)), table=table(model),
            assignments=assignments, pk=meta.pk.column)
    return written


# Field types whose Python values psycopg adapts as they are (Django's preparation only checks
# and converts what the engine already holds in this form: ints, strings, booleans, aware datetimes).
_PLAIN_TYPES = frozenset({"AutoField", "BigAutoField", "IntegerField", "BigIntegerField", "PositiveIntegerField",
                          "PositiveBigIntegerField", "SmallIntegerField", "CharField", "TextField", "BooleanField",
                          "ForeignKey", "DateTimeField"})

def array_text(values: list) -> str:
    """A list as PostgreSQL's text form of an array (`{1,2,NULL}`, `{"a","b \\"c\\""}`), to cast
    with `%s::type[]`: the driver then sends one string. Letting it adapt a list element by
    element, in Python, was about 15 % of a 1,000-event batch's time (py-spy). Values are
    ints, strings, booleans, datetimes and decimals as the database stores them, or None; one
    column's values share a type, so the text is built with one expression per type."""
    kind = next((type(value) for value in values if value is not None), None)
    if kind is int:
        if None not in values:
            return "{" + ",".join(map(str, values)) + "}"
        return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"
    if kind is str:
        try:
            return "{" + ",".join("NULL" if value is None
                                  else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                                  for value in values) + "}"
        except AttributeError:  # not all strings after all: element by element
            pass
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value) -> str:
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if type(value) is bool:
        return "t" if value else "f"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AnyOf(Lookup):
    """`filter(pk__any_of=ids)`: the column is one of the values. On PostgreSQL one array
    parameter (`= ANY(%s::bigint[])`, `array_text`): Django's `__in` prepares and binds every
    value on its own, 6 ms of a 19 ms query of a thousand referrals by id (13 ms with this), in
    each of the engine's loading queries. Elsewhere the same as `__in`. Registered on every field
    (`referrals.apps`)."""

    lookup_name = "any_of"
    prepare_rhs = False

    def get_prep_lookup(self):
        return list(self.rhs)

    def as_sql(self, compiler, connection):
        if connection.vendor != "postgresql":
            return compiler.compile(In(self.lhs, self.rhs))
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = [self.lhs.output_field.get_db_prep_value(value, connection) for value in self.rhs] \
            if not all(type(value) is int for value in self.rhs) else self.rhs
        return f"{lhs} = ANY(%s::{self.lhs.output_field.db_type(connection)}[])", [*lhs_params, array_text(values)]


# One JSON array text as an array of jsonb documents, in order.
_JSON_ARRAY = "ARRAY(SELECT e FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x(e, i) ORDER BY i)"


def _update_unnest(model, objs, columns) -> int:
    """PostgreSQL's `update_rows`: one array parameter per column, unnested server-side, so the
    statement's text and its client-side parsing stay the same size whatever the row count."""
    meta = model._meta
    fields = [meta.pk, *columns]
    # A JSON column travels as one JSON array text, as in `insert_rows`.
    arrays = ", ".join(_JSON_ARRAY if field.db_type(connection) == "jsonb" else f"%s::{field.db_type(connection)}[]"
                       for field in fields)
    names = ", ".join(["row_pk", *(f"v_{field.column}" for field in columns)])
    assignments = ", ".join(f"{field.column} = v.v_{field.column}" for field in columns)
    values = [array_text([meta.pk.get_db_prep_value(obj.pk, connection) for obj in objs])]
    for field in columns:
        if field.db_type(connection) == "jsonb":
            values.append(json.dumps([getattr(obj, field.attname) for obj in objs], cls=field.encoder))
        elif field.get_internal_type() in _PLAIN_TYPES:  # stored as they are
            values.append(array_text([getattr(obj, field.attname) for obj in objs]))
        else:
            values.append(array_text([field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs]))
    return execute("UPDATE {table} SET {assignments} FROM UNNEST({arrays}) AS v({names}) WHERE {table}.{pk} = v.row_pk",
                   values, table=table(model), assignments=assignments, arrays=arrays, names=names, pk=meta.pk.column)


def create_rows(model, columns: dict[str, list], constants: dict | None = None, *,
                returning: tuple[str, ...] = ("id",)) -> list:
    """Insert rows given as one list per column (database column names, values as stored) plus
    `constants` shared by every row; returns the ids of the rows in their order (nothing with
    `returning=()`). PostgreSQL: `insert_rows`, one statement and no model instance per row;
    SQLite: `bulk_create`."""
    constants = constants or {}
    if is_postgres():
        return [row[0] for row in insert_rows(model, columns, constants, returning=returning)]
    count = len(next(iter(columns.values()), []))
    objs = [model(**{name: values[i] for name, values in columns.items()}, **constants) for i in range(count)]
    created = model.objects.bulk_create(objs)
    return [obj.pk for obj in created] if returning else []


def insert_rows(model, columns: dict[str, list], constants: dict | None = None, *, unique: str = "",
                returning: tuple[str, ...] = ("id",)) -> list[tuple]:
    """PostgreSQL: insert rows with one statement whatever their number; returns the
    `returning` columns of the inserted rows, in the rows' order.

    `columns` holds one list of values per column (as the database stores them; JSON as its
    text), `constants` a value shared by every row. The lists travel as one array parameter
    each and are unnested server-side, so the statement's size and parse cost do not grow
    with the row count, and no model instance is built per row. With `unique` (a column with
    a unique constraint), rows whose value is already taken are skipped (not returned) instead
    of failing the statement; a concurrent insert of the same value is waited for.
    """
    constants = constants or {}
    db_types = {field.column: field.db_type(connection) for field in model._meta.concrete_fields}
    names = list(columns)
    # A JSON column travels as one JSON array text: as an array of texts, every quote in every
    # document would be escaped one by one on the way (most of the statement's client time).
    arrays = ", ".join(_JSON_ARRAY if db_types[name] == "jsonb" else f"%s::{db_types[name]}[]" for name in names)
    values = ["[" + ",".join(columns[name]) + "]" if db_types[name] == "jsonb" else array_text(columns[name])
              for name in names]
    shared = "".join(f", %s::{db_types[name]}" for name in constants)
    conflict = f" ON CONFLICT ({unique}) DO NOTHING" if unique else ""
    returned = f" RETURNING {', '.join(returning)}" if returning else ""
    # Ids are drawn in insertion order, so they follow the rows' order.
    statement = sql(
        "INSERT INTO {table} ({columns}) SELECT {values}{shared} FROM UNNEST({arrays}) WITH ORDINALITY "
        "AS u({names}, n) ORDER BY u.n{conflict}{returned}",
        table=table(model), columns=", ".join([*names, *constants]), values=", ".join(f"u.{n}" for n in names),
        shared=shared, arrays=arrays, names=", ".join(names), conflict=conflict, returned=returned)
    with connection.cursor() as cursor:
        cursor.execute(statement, [*constants.values(), *values])
        return cursor.fetchall() if returning else []


__all__ = ["AnyOf", "Batch", "array_text", "create_rows", "db_datetime", "execute", "insert_rows", "job_lock",
           "lock_clause", "move_balances", "post_each", "post_moves", "queryset_sql", "rows", "scalar", "sql", "table",
           "update_rows"]
