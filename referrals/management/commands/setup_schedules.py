"""Create the beat schedule of every periodic job, once. Idempotent: a schedule staff already
edited in the admin (interval, enabled) is left as it is. `make run` and deployments run it."""
import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from ...engine.jobs import JOBS

# Minutes between runs. Each job catches up on everything due, so a missed tick loses nothing.
DEFAULT_MINUTES = {
    "revenue_share_gates": 60,
    "template_gates": 15,
    "milestones": 60,
    "expire_credits": 60,
    "release_holds": 15,
    "retry_stuck_payouts": 10,
}
TASK = "referrals.run_job"
# Periodic tasks that are not ledger jobs: (schedule name, task, minutes).
OTHER_TASKS = [
    ("webhooks: deliver due", "integrations.deliver_due_webhooks", 1),
    ("e-mail: credits expiring in 3 days", "notifications.tasks.send_expiry_reminders", 60),
]
# The sweeper applies accepted events an interrupted apply left behind (referrals/engine/sweeper.py):
# every few seconds; a tick not picked up within 30 s is dropped (the next one does the same work).
SWEEPER = ("events: apply unapplied", "referrals.sweep_unapplied")
SWEEPER_SECONDS = 5
SWEEPER_EXPIRES = 30


def schedule_name(job: str) -> str:
    return f"job: {job}"


@transaction.atomic
def setup_schedules(*, minutes: dict[str, int] | None = None) -> list[str]:
    """Create the missing schedules; returns the names created."""
    minutes = {**DEFAULT_MINUTES, **(minutes or {})}
    created = []
    for job in JOBS:
        every = minutes.get(job, 60)
        if every <= 0:
            raise ValueError(f"minutes[{job}]: must be a positive number of minutes, got {every}")
        if PeriodicTask.objects.filter(name=schedule_name(job)).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.MINUTES)
        PeriodicTask.objects.create(name=schedule_name(job), task=TASK, interval=interval,
                                    kwargs=json.dumps({"name": job}), description=f"Periodic job {job}")
        created.append(schedule_name(job))
    for name, task, every in OTHER_TASKS:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.MINUTES)
        PeriodicTask.objects.create(name=name, task=task, interval=interval, description=name)
        created.append(name)
    name, task = SWEEPER
    if not PeriodicTask.objects.filter(name=name).exists():
        interval, _ = IntervalSchedule.objects.get_or_create(every=SWEEPER_SECONDS, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name=name, task=task, interval=interval, expire_seconds=SWEEPER_EXPIRES,
                                    description="Apply accepted events not applied yet (after a crash)")
        created.append(name)
    return created


class Command(BaseCommand):
    help = "Create the django-celery-beat schedules of the periodic jobs (existing ones are kept)."

    def handle(self, *args, **options):
        created = setup_schedules()
        self.stdout.write(f"schedules created: {', '.join(created) or 'none (all exist)'}")
