from django.core.management.base import BaseCommand, CommandError

from ...engine.verification import verify


class Command(BaseCommand):
    help = ("Check that every ledger transaction balances, balances match the ledger, and that replaying "
            "the event log from scratch reproduces the same ledger. Exits non-zero on any difference.")

    def add_arguments(self, parser):
        parser.add_argument("--no-replay", action="store_true", help="only the cheap integrity checks")

    def handle(self, *args, no_replay, **options):
        problems = verify(replay=not no_replay)
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"{len(problems)} difference(s) found")
        self.stdout.write(self.style.SUCCESS("ledger verified: balanced, projection matches, replay identical"))
