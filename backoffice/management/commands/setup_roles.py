from django.core.management.base import BaseCommand

from backoffice.roles import setup_roles


class Command(BaseCommand):
    help = "Create or update the staff groups 'support' and 'finance' with their permissions (idempotent)."

    def handle(self, *args, **options):
        for name, count in setup_roles().items():
            self.stdout.write(f"group {name}: {count} permissions")
