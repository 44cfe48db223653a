"""Programme versions (`referrals.engine.versions`): the ProgramVersion table, version 1 of every
existing programme (its current configuration, in force from the epoch: it is what the
engine applied so far), and `Accrual.program_version` / `Application.program_version`, set to
1 on the existing rows."""
from datetime import UTC, datetime
from decimal import Decimal

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def backfill(apps, schema_editor):
    Program = apps.get_model("referrals", "Program")
    ProgramVersion = apps.get_model("referrals", "ProgramVersion")
    Accrual = apps.get_model("referrals", "Accrual")
    Application = apps.get_model("referrals", "Application")
    fields = [f for f in Program._meta.concrete_fields if f.name not in ("id", "updated_at")]
    for program in Program.objects.order_by("pk"):
        config = {}
        for field in fields:  # as referrals.engine.versions.snapshot, frozen here
            value = getattr(program, field.attname)
            if isinstance(field, models.DecimalField) and value is not None:
                value = f"{Decimal(value):.{field.decimal_places}f}"
            config[field.attname] = value
        ProgramVersion.objects.create(program=program, number=1, effective_at=EPOCH, config=config,
                                      source="migration")
        Accrual.objects.filter(program_id=program.pk).update(program_version=1)
        Application.objects.filter(program_id=program.pk).update(program_version=1)


class Migration(migrations.Migration):

    dependencies = [
        ("referrals", "0007_referrer_rollups"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="accrual",
            name="program_version",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="application",
            name="program_version",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="ProgramVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("effective_at", models.DateTimeField(help_text="In force for events and jobs at or after this time.")),
                ("config", models.JSONField()),
                ("source", models.CharField(blank=True, help_text="admin, load_preset, code or migration", max_length=20)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("created_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL)),
                ("program", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="versions", to="referrals.program")),
            ],
            options={
                "ordering": ["program", "-number"],
                "constraints": [models.UniqueConstraint(fields=("program", "number"), name="program_version_once")],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
