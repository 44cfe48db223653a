"""PostgreSQL: the earnings rollup's UPDATE trigger (migration 0005) reads each updated accrual
once, not twice. 0005 rolled up the statement's old rows and its new rows separately, each
joined to its referral, so a job releasing 76,000 accruals did 152,000 referral lookups and
two aggregations. Here old and new rows are paired by id, rows whose rolled-up columns did not
change are skipped (a hold flag cleared on a row still held), and the referral is looked up
once per row (a second time only if the update moved the accrual to another referral). The
deltas written are the same. SQLite keeps its row-level triggers from 0005."""
from importlib import import_module

from django.db import migrations

_0005 = import_module("referrals.migrations.0005_earnings_rollup")

FORWARD = """
CREATE OR REPLACE FUNCTION referrals_earnings_rollup_update() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_earningsrollup (beneficiary_id, program_id, template_id, month, state, as_referred,
                                          accruals, amount, reversed)
    SELECT k.beneficiary_id, k.program_id, k.template_id, date_trunc('month', k.created_at AT TIME ZONE 'UTC')::date,
           k.state, k.as_referred, SUM(k.accruals), SUM(k.amount), SUM(k.reversed)
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    LEFT JOIN referrals_referral r ON r.id = n.referral_id
    CROSS JOIN LATERAL (VALUES
        (n.beneficiary_id, n.program_id, n.template_id, n.created_at, n.state,
         COALESCE(r.referred_id = n.beneficiary_id, false), 1, n.amount, n.reversed),
        (o.beneficiary_id, o.program_id, o.template_id, o.created_at, o.state,
         CASE WHEN o.referral_id IS NOT DISTINCT FROM n.referral_id
              THEN COALESCE(r.referred_id = o.beneficiary_id, false)
              ELSE COALESCE((SELECT p.referred_id = o.beneficiary_id FROM referrals_referral p
                             WHERE p.id = o.referral_id), false) END,
         -1, -o.amount, -o.reversed)
    ) k (beneficiary_id, program_id, template_id, created_at, state, as_referred, accruals, amount, reversed)
    -- The columns the rollup's keys and sums come from.
    WHERE (n.beneficiary_id, n.program_id, n.template_id, n.created_at, n.state, n.referral_id, n.amount, n.reversed)
          IS DISTINCT FROM
          (o.beneficiary_id, o.program_id, o.template_id, o.created_at, o.state, o.referral_id, o.amount, o.reversed)
    GROUP BY 1, 2, 3, 4, 5, 6
    HAVING SUM(k.accruals) <> 0 OR SUM(k.amount) <> 0 OR SUM(k.reversed) <> 0;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""

# 0005's function, as it was.
_HEADER = "CREATE FUNCTION referrals_earnings_rollup_update()"
_BODY = _0005.PG_FORWARD.split(_HEADER)[1].split("CREATE TRIGGER")[0]
BACKWARD = "CREATE OR REPLACE" + _HEADER.removeprefix("CREATE") + _BODY


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):

    dependencies = [("referrals", "0012_hot_job_updates")]

    operations = [migrations.RunPython(forward, backward)]
