"""The event log keeps only the indexes it needs: every index is written by each stored event
and again by its claim (`applied_at`, named by the pending index, makes that UPDATE non-HOT).

Dropped: the single-column account index (the (account, type) index serves it) and the
`_like` copies of the external id and type indexes (`varchar_pattern_ops`, used by LIKE only;
the admin searches exact ids). The external id stays unique through a named constraint and
the type keeps a plain btree.

SQLite keeps its inline UNIQUE (changing it would rebuild the table, which breaks the ledger
line triggers that name `referrals_event`, see 0006); only its two plain indexes change."""
from django.conf import settings
from django.db import migrations, models
from django.db.models.deletion import PROTECT

FORWARD = {
    "postgresql": [
        'DROP INDEX IF EXISTS "referrals_event_account_id_837181d2"',
        'ALTER TABLE "referrals_event" DROP CONSTRAINT IF EXISTS "referrals_event_external_id_key"',
        'DROP INDEX IF EXISTS "referrals_event_external_id_8106d79b_like"',
        'DROP INDEX IF EXISTS "referrals_event_type_a91cc281"',
        'DROP INDEX IF EXISTS "referrals_event_type_a91cc281_like"',
        'CREATE INDEX "event_type" ON "referrals_event" ("type")',
        'ALTER TABLE "referrals_event" ADD CONSTRAINT "event_external_id_unique" UNIQUE ("external_id")',
    ],
    "sqlite": [
        'DROP INDEX IF EXISTS "referrals_event_account_id_837181d2"',
        'DROP INDEX IF EXISTS "referrals_event_type_a91cc281"',
        'CREATE INDEX "event_type" ON "referrals_event" ("type")',
    ],
}
BACKWARD = {
    "postgresql": [
        'ALTER TABLE "referrals_event" DROP CONSTRAINT "event_external_id_unique"',
        'DROP INDEX "event_type"',
        'ALTER TABLE "referrals_event" ADD CONSTRAINT "referrals_event_external_id_key" UNIQUE ("external_id")',
        'CREATE INDEX "referrals_event_external_id_8106d79b_like" ON "referrals_event" '
        '("external_id" varchar_pattern_ops)',
        'CREATE INDEX "referrals_event_type_a91cc281" ON "referrals_event" ("type")',
        'CREATE INDEX "referrals_event_type_a91cc281_like" ON "referrals_event" ("type" varchar_pattern_ops)',
        'CREATE INDEX "referrals_event_account_id_837181d2" ON "referrals_event" ("account_id")',
    ],
    "sqlite": [
        'DROP INDEX "event_type"',
        'CREATE INDEX "referrals_event_type_a91cc281" ON "referrals_event" ("type")',
        'CREATE INDEX "referrals_event_account_id_837181d2" ON "referrals_event" ("account_id")',
    ],
}


def _run(statements):
    def run(apps, schema_editor) -> None:
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement, params=None)
    return run


class Migration(migrations.Migration):
    dependencies = [
        ("referrals", "0010_referral_spend_by_product"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event", name="account",
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=PROTECT,
                                            related_name="events", to="referrals.account")),
                migrations.AlterField(model_name="event", name="external_id", field=models.CharField(max_length=200)),
                migrations.AlterField(model_name="event", name="type", field=models.CharField(max_length=40)),
                migrations.AddIndex(model_name="event", index=models.Index(fields=["type"], name="event_type")),
                migrations.AddConstraint(
                    model_name="event",
                    constraint=models.UniqueConstraint(fields=("external_id",), name="event_external_id_unique")),
            ],
            database_operations=[migrations.RunPython(_run(FORWARD), _run(BACKWARD))],
        ),
    ]
