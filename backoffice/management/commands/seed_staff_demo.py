"""Demo data for the staff desks, on top of `seed_demo`: the support and finance roles with a
login each (two finance members, so a payout above the maker-checker limit can be approved twice),
a partner with earnings (cash and payouts waiting where a programme pays cash; credits under
runpod's programmes), and a referral flagged as self-referral.

Demo data follows the preset that is loaded, never another: payouts need a programme that pays
cash, and when none is enabled (the `runpod` preset pays in credits) there are no demo payouts
(`PRESET=vast make run` shows the payouts desk). Safe to run twice: events have fixed ids and
payouts are only requested once.
"""
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from backoffice.roles import setup_roles
from ledger.money import format_cents
from referrals.engine import events as ev
from referrals.engine.services import ingest_event
from referrals.models import Account, Event, Program

STAFF = {  # username: (group, password) — published demo logins, printed on purpose
    "fiona": ("finance", "fiona-demo-pass"),
    "frank": ("finance", "frank-demo-pass"),
    "sue": ("support", "sue-demo-pass"),
}
PARTNER = "demo-partner"
CLIENT_PURCHASES = ["20000.00", "20000.00", "20000.00"]  # vast: 3% x 75% of 60,000 = 1,350.00 of cash
# runpod counts spend, not purchases: each client's serverless spend crosses the $1,000 milestone
# ($500 of credits each to the partner) and earns 2% revenue share, held until the 25-referral gate.
CLIENT_SPEND = ("1500.00", "serverless")
# One payout per method, so every method's round trip can be shown (`make run` pays them through
# the local fake providers, payouts/fakes/demo.py); the Stripe one is above the default
# second-approval limit of 1,000.00.
PAYOUTS = [("45.00", "paypal"), ("1200.00", "stripe"), ("60.00", "wise")]
PARTNER_METHODS = {"paypal": {"email": "partner.payouts@example.com"}, "wise": {"recipient": "40001350"},
                   # Registered as an integration would after Stripe's onboarding: ready for transfers.
                   "stripe": {"connected_account": "acct_demopartner"}}


class Command(BaseCommand):
    help = "Staff logins per role and a partner with payouts to approve (run after seed_demo; idempotent)."

    def handle(self, *args, **options):
        setup_roles()
        for username, (group, password) in STAFF.items():
            self._staff(username, group, password)
        partner = self._partner()
        if Program.objects.filter(enabled=True).filter(
                Q(pays_in=Program.PaysIn.CASH) | Q(partner_pays_in=Program.PaysIn.CASH) | Q(cashout_percent__gt=0)
        ).exists():
            self._payouts(partner)
        else:
            self.stdout.write("no demo payouts: no enabled programme pays cash (PRESET=vast make run has some)")
        for username, (group, password) in STAFF.items():
            self.stdout.write(f"Staff login ({group}): {username} / {password}")

    def _staff(self, username: str, group: str, password: str) -> None:
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com", "is_staff": True})
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name=group))

    def _partner(self) -> Account:
        existing = Account.objects.filter(external_id=PARTNER).first()
        base = existing.signed_up_at if existing else (timezone.now() - timedelta(days=40)).replace(microsecond=0)
        self._push("demo-partner-signup", ev.ACCOUNT_CREATED, PARTNER, base, email="partner@example.com")
        partner = Account.objects.get(external_id=PARTNER)
        counted = {t for types in Program.objects.filter(enabled=True).values_list("event_types", flat=True)
                   for t in types}
        for n, amount in enumerate(CLIENT_PURCHASES, start=1):
            client = f"{PARTNER}-client-{n}"
            self._push(f"demo-partner-client-{n}", ev.ACCOUNT_CREATED, client, base + timedelta(days=n),
                       email=f"{client}@example.com", referral_code=partner.referral_code)
            if ev.CREDITS_PURCHASED in counted:
                self._push(f"demo-partner-purchase-{n}", ev.CREDITS_PURCHASED, client,
                           base + timedelta(days=n + 1), amount=amount)
            if ev.USAGE_CHARGED in counted:
                self._push(f"demo-partner-spend-{n}", ev.USAGE_CHARGED, client, base + timedelta(days=n + 1),
                           amount=CLIENT_SPEND[0], product=CLIENT_SPEND[1])
        # The partner's own second address, signed up through its link: flagged as self-referral.
        self._push("demo-partner-alias", ev.ACCOUNT_CREATED, f"{PARTNER}-alias", base + timedelta(days=5),
                   email="Partner+promo@example.com", referral_code=partner.referral_code)
        return partner

    def _payouts(self, partner: Account) -> None:
        from payouts import services

        if partner.payouts.exists():
            return
        for method, details in PARTNER_METHODS.items():
            services.payout_method_set(account=partner, type=method, **details)
        for amount, method in PAYOUTS:
            payout = services.payout_request(account=partner, amount=amount, method=method)
            needs = " (needs two approvals)" if services.needs_second_approval(payout.amount) else ""
            self.stdout.write(f"payout #{payout.pk} of {format_cents(payout.amount)} by {method} requested{needs}")

    def _push(self, event_id: str, event_type: str, account: str, when, **fields) -> None:
        raw = {"id": event_id, "type": event_type, "account": account, "occurred_at": when.isoformat(), **fields}
        result = ingest_event(raw, source=Event.Source.PORTAL)
        if result.status == "rejected":
            self.stderr.write(f"  {event_id} rejected: {result.message}")
