from django.core.management.base import BaseCommand, CommandError

from ...presets import PRESETS, UnknownPreset, load_preset


class Command(BaseCommand):
    help = "Create or update a provider preset's programmes (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("preset", choices=sorted(PRESETS))

    def handle(self, *args, preset, **options):
        try:
            loaded = load_preset(preset)
        except UnknownPreset as exc:
            raise CommandError(str(exc)) from exc
        for program, created in loaded:
            self.stdout.write(f"{'created' if created else 'updated'} {program.key}: {program.name}")
