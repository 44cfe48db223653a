"""The dashboard's earnings rollup and the triggers that keep it in step with every accrual
write, in the same statement (see `referrals.models.EarningsRollup`). The accruals already in
the database are rolled up once, as the triggers are installed."""
from django.db import migrations, models

ROLLUP = "referrals_earningsrollup"
KEYS = ("beneficiary_id", "program_id", "template_id", "month", "state", "as_referred")
SUMS = ("accruals", "amount", "reversed")

# PostgreSQL: statement-level triggers with transition tables, so a job's UPDATE of 50,000
# accruals adds one delta row per key, not 50,000.

_PG_DELTAS = """
    SELECT a.beneficiary_id, a.program_id, a.template_id,
           date_trunc('month', a.created_at AT TIME ZONE 'UTC')::date AS month, a.state,
           COALESCE(r.referred_id = a.beneficiary_id, false) AS as_referred,
           {sign} * COUNT(*) AS accruals, {sign} * SUM(a.amount) AS amount, {sign} * SUM(a.reversed) AS reversed
    FROM {rows} a LEFT JOIN referrals_referral r ON r.id = a.referral_id
    GROUP BY 1, 2, 3, 4, 5, 6"""

_PG_INSERT = f"INSERT INTO {ROLLUP} ({', '.join(KEYS + SUMS)})"

PG_FORWARD = f"""
CREATE FUNCTION referrals_earnings_rollup_insert() RETURNS trigger AS $$
BEGIN
    {_PG_INSERT} {_PG_DELTAS.format(sign=1, rows='new_rows')};
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_earnings_rollup_delete() RETURNS trigger AS $$
BEGIN
    {_PG_INSERT} {_PG_DELTAS.format(sign=-1, rows='old_rows')};
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_earnings_rollup_update() RETURNS trigger AS $$
BEGIN
    {_PG_INSERT}
    SELECT {', '.join(KEYS)}, SUM(accruals), SUM(amount), SUM(reversed) FROM (
        {_PG_DELTAS.format(sign=1, rows='new_rows')}
        UNION ALL {_PG_DELTAS.format(sign=-1, rows='old_rows')}) d
    GROUP BY {', '.join(KEYS)}
    HAVING SUM(accruals) <> 0 OR SUM(amount) <> 0 OR SUM(reversed) <> 0;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER referrals_earnings_rollup_insert AFTER INSERT ON referrals_accrual
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_earnings_rollup_insert();
CREATE TRIGGER referrals_earnings_rollup_update AFTER UPDATE ON referrals_accrual
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_earnings_rollup_update();
CREATE TRIGGER referrals_earnings_rollup_delete AFTER DELETE ON referrals_accrual
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_earnings_rollup_delete();
"""

PG_BACKWARD = """
DROP TRIGGER IF EXISTS referrals_earnings_rollup_insert ON referrals_accrual;
DROP TRIGGER IF EXISTS referrals_earnings_rollup_update ON referrals_accrual;
DROP TRIGGER IF EXISTS referrals_earnings_rollup_delete ON referrals_accrual;
DROP FUNCTION IF EXISTS referrals_earnings_rollup_insert();
DROP FUNCTION IF EXISTS referrals_earnings_rollup_update();
DROP FUNCTION IF EXISTS referrals_earnings_rollup_delete();
"""


def _sqlite_row(row: str, sign: str) -> str:
    # SQLite stores aware datetimes as UTC text ("2026-11-21 07:33:47.123456"): this is the UTC month.
    return (f"INSERT INTO {ROLLUP} ({', '.join(KEYS + SUMS)}) VALUES ({row}.beneficiary_id, {row}.program_id, "
            f"{row}.template_id, date({row}.created_at, 'start of month'), {row}.state, COALESCE((SELECT r.referred_id = "
            f"{row}.beneficiary_id FROM referrals_referral r WHERE r.id = {row}.referral_id), 0), {sign}1, "
            f"{sign}{row}.amount, {sign}{row}.reversed);")


_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in (
    "beneficiary_id", "program_id", "template_id", "created_at", "state", "referral_id", "amount", "reversed"))

SQLITE_FORWARD = [
    f"CREATE TRIGGER referrals_earnings_rollup_insert AFTER INSERT ON referrals_accrual "
    f"BEGIN {_sqlite_row('NEW', '')} END",
    f"CREATE TRIGGER referrals_earnings_rollup_update AFTER UPDATE ON referrals_accrual WHEN {_CHANGED} "
    f"BEGIN {_sqlite_row('OLD', '-')} {_sqlite_row('NEW', '')} END",
    f"CREATE TRIGGER referrals_earnings_rollup_delete AFTER DELETE ON referrals_accrual "
    f"BEGIN {_sqlite_row('OLD', '-')} END",
]
SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS referrals_earnings_rollup_{op}" for op in ("insert", "update", "delete")]

# The rows already there when the triggers are installed (a migration on a live database).
BACKFILL_PG = f"{_PG_INSERT} {_PG_DELTAS.format(sign=1, rows='referrals_accrual')}"
BACKFILL_SQLITE = (
    f"INSERT INTO {ROLLUP} ({', '.join(KEYS + SUMS)}) "
    "SELECT a.beneficiary_id, a.program_id, a.template_id, date(a.created_at, 'start of month'), a.state, "
    "COALESCE(r.referred_id = a.beneficiary_id, 0), COUNT(*), SUM(a.amount), SUM(a.reversed) "
    "FROM referrals_accrual a LEFT JOIN referrals_referral r ON r.id = a.referral_id GROUP BY 1, 2, 3, 4, 5, 6")


def install(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
        schema_editor.execute(BACKFILL_PG, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement, params=None)
        schema_editor.execute(BACKFILL_SQLITE, params=None)


def uninstall(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('referrals', '0004_click_public_id'),
    ]

    operations = [
        migrations.CreateModel(
            name='EarningsRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('beneficiary_id', models.BigIntegerField()),
                ('program_id', models.BigIntegerField()),
                ('template_id', models.BigIntegerField(null=True)),
                ('month', models.DateField(help_text='First day of the UTC month of the accrual.')),
                ('state', models.CharField(max_length=10)),
                ('as_referred', models.BooleanField()),
                ('accruals', models.BigIntegerField()),
                ('amount', models.BigIntegerField()),
                ('reversed', models.BigIntegerField()),
            ],
            options={
                'indexes': [models.Index(fields=['beneficiary_id', 'month'], name='earningsrollup_account_month')],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
