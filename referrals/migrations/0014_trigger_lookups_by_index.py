"""PostgreSQL: the triggers that keep the ledger lines (0006) and the earnings rollup (0005,
0013) look up each written row's transaction, event or referral by primary key, whatever the
size of their tables.

Their queries joined the statement's transition table to `ledger_transaction` and
`referrals_referral`. The planner knows nothing of a transition table's size (it assumes about
2,000 rows), so it chose a hash join over a sequential scan of the whole joined table: a
single-event POST read all 35,000 ledger transactions and all referrals of the benchmark's
database, about 11 ms of its 27 ms, and the cost grew with the ledger. A LATERAL lookup is
always a parameterised index scan per written row (`LIMIT 1` keeps the planner from turning it
back into the join: a subquery with a LIMIT is not pulled up). The rows written are the same.
SQLite's row-level triggers already look up by key.
"""
from importlib import import_module

from django.db import migrations

_0005 = import_module("referrals.migrations.0005_earnings_rollup")
_0006 = import_module("referrals.migrations.0006_ledger_line")
_0013 = import_module("referrals.migrations.0013_earnings_rollup_update_once")

# (join as it was, the same join by index lookup)
_JOINS = [
    ("FROM new_rows n JOIN ledger_transaction t ON t.id = n.transaction_id\n"
     "    LEFT JOIN referrals_event e ON e.id = t.event_id",
     "FROM new_rows n CROSS JOIN LATERAL (SELECT t.created_at, t.event_id FROM ledger_transaction t\n"
     "                                     WHERE t.id = n.transaction_id LIMIT 1) t\n"
     "    LEFT JOIN LATERAL (SELECT e.occurred_at FROM referrals_event e WHERE e.id = t.event_id LIMIT 1) e ON true"),
    *[(f"LEFT JOIN referrals_referral r ON r.id = {alias}.referral_id",
       f"LEFT JOIN LATERAL (SELECT p.referred_id FROM referrals_referral p WHERE p.id = {alias}.referral_id LIMIT 1) r ON true")
      for alias in ("a", "n")],
]


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


def _by_index(sql: str) -> str:
    for old, new in _JOINS:
        sql = sql.replace(old, new)
    return sql


FORWARD = _by_index(_BEFORE)
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
