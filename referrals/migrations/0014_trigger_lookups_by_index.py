"""PostgreSQL: the triggers that keep the ledger lines (0006) and the earnings rollup (0005,
0013) plan their query on each call, for the rows that call wrote.

Their queries join the statement's transition table to `ledger_transaction` and
`referrals_referral`. PL/pgSQL planned them once per session and kept the plan, made for the
row count of the first call: after an engine batch of 1,000 charges, each single-event POST of
the same process joined its one row by a hash join over a scan of the whole ledger_transaction
and referral tables, about 11 ms of its 27 ms in bench/ingest.py, growing with the ledger.
Run through EXECUTE, the query is planned per call with the transition table's real size: a
key lookup for a few rows, a hash join for a job's tens of thousands (forcing key lookups
for those made template_gates and release_holds 1.5 times slower). The rows written are the
same. SQLite's row-level triggers already look up by key.
"""
from importlib import import_module

from django.db import migrations

_0005 = import_module("referrals.migrations.0005_earnings_rollup")
_0006 = import_module("referrals.migrations.0006_ledger_line")
_0013 = import_module("referrals.migrations.0013_earnings_rollup_update_once")

_BODY_START = "BEGIN\n"
_BODY_END = ";\n    RETURN NULL;"


def _functions(sql: str) -> str:
    """The CREATE FUNCTION statements of a migration's SQL, as CREATE OR REPLACE."""
    statements = [part.split("CREATE TRIGGER")[0] for part in sql.split("CREATE FUNCTION")[1:]]
    return "".join("CREATE OR REPLACE FUNCTION" + statement.split("-- Entries are append-only")[0]
                   for statement in statements)


_BEFORE = "".join([
    _functions(_0005.PG_FORWARD.split("CREATE FUNCTION referrals_earnings_rollup_update()")[0]),
    _0013.FORWARD,
    _functions(_0006.PG_FORWARD.split("CREATE FUNCTION referrals_ledger_line_delete()")[0]),
])


def _planned_per_call(sql: str) -> str:
    """Each function's one statement, run through EXECUTE (planned on every call)."""
    functions = sql.split("CREATE OR REPLACE FUNCTION")[1:]
    out = []
    for function in functions:
        head, body = function.split(_BODY_START, 1)
        statement, tail = body.split(_BODY_END, 1)
        assert "$q$" not in statement
        out.append(f"CREATE OR REPLACE FUNCTION{head}{_BODY_START}    EXECUTE $q${statement}$q${_BODY_END}{tail}")
    return "".join(out)


FORWARD = _planned_per_call(_BEFORE)
BACKWARD = _BEFORE


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):

    dependencies = [("referrals", "0013_earnings_rollup_update_once")]

    operations = [migrations.RunPython(forward, backward)]
