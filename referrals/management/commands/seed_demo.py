"""Demo data for a local portal: a staff login and a demo referrer with ~30 referred accounts and
their activity, all pushed through the real event service. Safe to run twice: every event has a
fixed id and timestamps hang off the demo account's sign-up, so a second run only finds duplicates.
"""
import os
from collections import Counter
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from ledger.money import format_exact

from ...engine import events as ev
from ...engine.jobs import run_jobs
from ...engine.services import ingest_event
from ...models import Account, Accrual, Application, Click, Event, Program

STAFF_USERNAME = "admin"
STAFF_PASSWORD = "admin-demo-pass"  # noqa: S105 - a published demo login, printed on purpose
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-pass-1234"  # noqa: S105 - a published demo login, printed on purpose
DEMO_ACCOUNT = "demo-referrer"
DEMO_TEMPLATE = "demo-comfyui"
REFERRED_COUNT = 30
HISTORY_DAYS = 60
CLICK_VISITORS = 35
REPEAT_CLICKS = 10


class Command(BaseCommand):
    help = "Create a staff login and a demo referrer with referred accounts and activity (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--preset", default=os.environ.get("PRESET", ""),
                            help="Show only this preset's programmes (others left from an earlier run are "
                                 "disabled); default: $PRESET, else every enabled programme.")

    def handle(self, *args, **options):
        self.outcomes: Counter = Counter()
        if options["preset"]:
            self._only_preset(options["preset"])
        self._staff_user()
        user = self._demo_user()
        with transaction.atomic():
            referrer, base = self._demo_referrer(user)
            self._referred_activity(referrer, base)
            self._clicks(referrer, base)
        run_jobs()
        self._summary(referrer)

    def _only_preset(self, preset: str) -> None:
        """Demo data per preset: `PRESET=vast make run` after `make run` must not keep runpod's
        programmes (and their rules and texts) switched on beside vast's."""
        if not Program.objects.filter(preset=preset).exists():
            raise CommandError(f"preset {preset!r} is not loaded; run load_preset {preset} first")
        switched = Program.objects.filter(enabled=True).exclude(preset=preset).update(enabled=False)
        if switched:
            self.stdout.write(f"disabled {switched} programme(s) of other presets: the demo shows {preset}")

    def _push(self, raw: dict) -> None:
        result = ingest_event(raw, source=Event.Source.PORTAL)
        self.outcomes[result.status] += 1
        if result.status == "rejected":
            self.stderr.write(f"  {raw['id']} rejected: {result.message}")

    def _staff_user(self) -> None:
        User = get_user_model()
        if not User.objects.filter(username=STAFF_USERNAME).exists():
            User.objects.create_superuser(STAFF_USERNAME, "admin@example.com", STAFF_PASSWORD)
            self.stdout.write("created the staff superuser")

    def _demo_user(self):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_EMAIL, defaults={"email": DEMO_EMAIL})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        return user

    def _demo_referrer(self, user) -> tuple[Account, object]:
        existing = Account.objects.filter(external_id=DEMO_ACCOUNT).first()
        # Timestamps hang off the first run's sign-up so that re-runs send byte-identical events.
        base = existing.signed_up_at if existing else (
            timezone.now() - timedelta(days=HISTORY_DAYS)).replace(second=0, microsecond=0)
        self._push(_event("demo-signup-referrer", ev.ACCOUNT_CREATED, DEMO_ACCOUNT, base, email=DEMO_EMAIL))
        referrer = Account.objects.get(external_id=DEMO_ACCOUNT)
        if referrer.user_id is None and not Account.objects.filter(user=user).exists():
            Account.objects.filter(pk=referrer.pk).update(user=user)
        self._push(_event("demo-template-published", ev.TEMPLATE_PUBLISHED, DEMO_ACCOUNT, base + timedelta(days=1),
                          template=DEMO_TEMPLATE, name="ComfyUI for image generation"))
        return referrer, base

    def _referred_activity(self, referrer: Account, base) -> None:
        counted = {t for types in Program.objects.filter(enabled=True).values_list("event_types", flat=True)
                   for t in types}
        milestones = list(Program.objects.filter(enabled=True, kind=Program.Kind.MILESTONE))
        for i in range(1, REFERRED_COUNT + 1):
            account = f"demo-referred-{i:02d}"
            signed_up = base + timedelta(days=2 + (i - 1) * 1.4)
            self._push(_event(f"demo-signup-{i:02d}", ev.ACCOUNT_CREATED, account, signed_up,
                              email=f"{account}@example.com", referral_code=referrer.referral_code))
            if i > REFERRED_COUNT - 4:
                continue  # a few referrals stay pending: signed up, nothing bought yet
            if ev.CREDITS_PURCHASED in counted and i % 3 == 0:
                self._push(_event(f"demo-credits-{i:02d}", ev.CREDITS_PURCHASED, account,
                                  signed_up + timedelta(days=1), amount="50.00"))
            if ev.PLAN_PURCHASED in counted and i % 4 == 1:
                self._push(_event(f"demo-plan-{i:02d}", ev.PLAN_PURCHASED, account,
                                  signed_up + timedelta(days=2), amount="29.00", plan="pro"))
            self._push(_event(f"demo-usage-{i:02d}", ev.USAGE_CHARGED, account, signed_up + timedelta(days=3),
                              amount=f"{18 + i}.50", product="pods"))
            if i % 2 == 0:
                # 8 h at $0.54/h on the demo template: 13 of these pass the 24 h template gate.
                self._push(_event(f"demo-template-usage-{i:02d}", ev.USAGE_CHARGED, account,
                                  signed_up + timedelta(days=5), amount="4.32", product="pods",
                                  template=DEMO_TEMPLATE, runtime_seconds=8 * 3600))
        for n, program in enumerate(milestones, start=1):
            threshold = Decimal(program.milestone_threshold)
            if threshold <= 0:
                continue
            # One referred account crosses the milestone with a single charge.
            self._push(_event(f"demo-milestone-{program.key}", ev.USAGE_CHARGED, f"demo-referred-{n:02d}",
                              base + timedelta(days=12 + n), amount=f"{threshold + 200:.2f}",
                              product=program.product or "pods"))

    def _clicks(self, referrer: Account, base) -> None:
        if Click.objects.filter(referrer=referrer).exists():
            return
        first = [
            Click(referrer=referrer, visitor_id=f"demo-visitor-{n:02d}", path="/", is_unique=True,
                  user_agent="Mozilla/5.0 (demo)", created_at=base + timedelta(days=1 + n * 1.2))
            for n in range(CLICK_VISITORS)
        ]
        # The same visitors again half an hour later: counted in total clicks, not as unique.
        repeats = [
            Click(referrer=referrer, visitor_id=click.visitor_id, path="/", is_unique=False,
                  user_agent=click.user_agent, created_at=click.created_at + timedelta(minutes=30))
            for click in first[:REPEAT_CLICKS]
        ]
        Click.objects.bulk_create(first + repeats)

    def _summary(self, referrer: Account) -> None:
        self.stdout.write(
            f"events: {self.outcomes['accepted']} accepted, {self.outcomes['duplicate']} already there, "
            f"{self.outcomes['rejected']} rejected"
        )
        earned = _earned_by_program(Accrual.objects.all())
        by_referrer = _earned_by_program(Accrual.objects.filter(beneficiary=referrer))
        for program in Program.objects.filter(enabled=True):
            total, mine = format_exact(earned.get(program.pk, 0)), format_exact(by_referrer.get(program.pk, 0))
            self.stdout.write(f"  {program.name}: {total} earned in all, {mine} of it by the demo referrer")
        for application in Application.objects.filter(account=referrer).select_related("program"):
            self.stdout.write(f"  application for {application.program.name}: {application.status}")
        self.stdout.write(f"Staff login: {STAFF_USERNAME} / {STAFF_PASSWORD} at {settings.SITE_URL}/admin/")
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} at {settings.SITE_URL}/login/")


def _earned_by_program(accruals) -> dict[int, int]:
    rows = (accruals.exclude(state=Accrual.State.VOID)
            .values_list("program_id").annotate(net=Sum(F("amount") - F("reversed"))))
    return {program_id: int(net or 0) for program_id, net in rows}


def _event(event_id: str, event_type: str, account: str, when, **fields) -> dict:
    return {"id": event_id, "type": event_type, "account": account, "occurred_at": when.isoformat(), **fields}
