import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from ...engine.jobs import JOBS, UnknownJob, future_run_problem, run_jobs


class Command(BaseCommand):
    help = "Run the periodic jobs now, or as of --at (ISO 8601). Names: " + ", ".join(JOBS)

    def add_arguments(self, parser):
        parser.add_argument("jobs", nargs="*", help="job names (default: all)")
        parser.add_argument("--at", help="evaluate as of this ISO 8601 time (with a zone)")

    def handle(self, *args, jobs, at, **options):
        when = None
        if at:
            try:
                when = parse_datetime(at)
            except ValueError:  # well-formed but impossible, e.g. February 30th
                when = None
            if when is None or when.tzinfo is None:
                raise CommandError("--at must be an ISO 8601 date-time with a time zone, e.g. 2026-01-31T00:00:00Z")
            if problem := future_run_problem(when):
                raise CommandError(f"--at {problem}; jobs run as of now or an earlier time")
        try:
            results = run_jobs(at=when, names=jobs or None)
        except UnknownJob as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(results, indent=2, sort_keys=True))
