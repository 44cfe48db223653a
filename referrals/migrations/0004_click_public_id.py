# Clicks get an id made before their row is written (referrals.attribution.clicks buffers the writes).
# A unique field with a callable default needs three steps: add it nullable, fill the
# existing rows (one statement, not a query per row), then make it unique and required.

import uuid

from django.db import migrations, models


def fill_public_ids(apps, schema_editor):
    table = apps.get_model("referrals", "Click")._meta.db_table
    if schema_editor.connection.vendor == "postgresql":
        value = "gen_random_uuid()"
    elif schema_editor.connection.vendor == "sqlite":
        value = "lower(hex(randomblob(16)))"  # Django keeps UUIDs as 32 hex characters on SQLite
    else:
        Click = apps.get_model("referrals", "Click")
        for click in Click.objects.filter(public_id__isnull=True).only("pk").iterator():
            Click.objects.filter(pk=click.pk).update(public_id=uuid.uuid4())
        return
    schema_editor.execute(f"UPDATE {table} SET public_id = {value} WHERE public_id IS NULL")


class Migration(migrations.Migration):
    dependencies = [
        ("referrals", "0003_fraudflag_account"),
    ]

    operations = [
        migrations.AddField(
            model_name="click",
            name="public_id",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(fill_public_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="click",
            name="public_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
