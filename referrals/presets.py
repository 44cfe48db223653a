"""The three providers' programmes as presets. Every number of SPEC lives here as data."""
from decimal import Decimal

from django.db import transaction

from .engine import events as ev
from .engine import versions
from .models import Program

K = Program.Kind

PRESETS: dict[str, list[dict]] = {
    "runpod": [
        {
            "key": "runpod-revenue-share", "name": "Lifetime revenue share", "kind": K.REVENUE_SHARE,
            "description": "2% of every amount a referred account spends, for life, as credits. "
                           "Held until the referrer has 25 referred accounts with $500 of spend and staff approve.",
            "event_types": [ev.USAGE_CHARGED], "rate": Decimal("2.00"), "pays_in": Program.PaysIn.CREDITS,
            "requires_approval": True, "gate_min_referrals": 25, "gate_min_spend": Decimal("500.00"),
        },
        {
            "key": "runpod-serverless-milestone", "name": "Serverless milestone", "kind": K.MILESTONE,
            "description": "When a referred account's serverless spend reaches $1,000, "
                           "the referrer and the referred account each receive $500 in credits.",
            "event_types": [ev.USAGE_CHARGED], "product": "serverless", "pays_in": Program.PaysIn.CREDITS,
            "milestone_threshold": Decimal("1000.00"), "referrer_bonus": Decimal("500.00"),
            "referred_bonus": Decimal("500.00"),
        },
        {
            "key": "runpod-template-share", "name": "Template revenue share", "kind": K.TEMPLATE_SHARE,
            "description": "1% of the runtime spend of instances launched from a public template, for its creator, "
                           "released once the template has 24 hours of cumulative runtime.",
            "event_types": [ev.USAGE_CHARGED], "rate": Decimal("1.00"), "pays_in": Program.PaysIn.CREDITS,
            "template_min_runtime_hours": Decimal("24"),
        },
    ],
    "apimarket": [
        {
            "key": "apimarket-signup-credit", "name": "Sign-up credit", "kind": K.SIGNUP_CREDIT,
            "description": "A referred account gets $2.50 of wallet credit at sign-up, valid for 30 days.",
            "signup_credit": Decimal("2.50"), "credit_valid_days": 30, "pays_in": Program.PaysIn.CREDITS,
        },
        {
            "key": "apimarket-commission", "name": "Commission on plan purchases", "kind": K.PURCHASE_COMMISSION,
            "description": "Basic track: 5% of referred plan purchases as wallet credits. "
                           "Partner track: 10% as cash, paid out through Stripe, minimum payout $25.",
            "event_types": [ev.PLAN_PURCHASED], "rate": Decimal("5.00"), "pays_in": Program.PaysIn.CREDITS,
            "partner_rate": Decimal("10.00"), "partner_pays_in": Program.PaysIn.CASH,
            "min_payout": Decimal("25.00"), "payout_methods": ["stripe"],
        },
    ],
    "vast": [
        {
            "key": "vast-credit-commission", "name": "Referral credits", "kind": K.PURCHASE_COMMISSION,
            "description": "3% of the credits a referred new client purchases, for life. 75% of referral credits "
                           "can be withdrawn as cash (Stripe Connect, PayPal, Wise); the rest stays credits. "
                           "Not withdrawable while your own account holds purchased credits.",
            "event_types": [ev.CREDITS_PURCHASED], "rate": Decimal("3.00"), "pays_in": Program.PaysIn.CREDITS,
            "cashout_percent": Decimal("75.00"), "own_credits_block_cashout": True,
            "payout_methods": ["stripe", "paypal", "wise"],
        },
    ],
}


class UnknownPreset(ValueError):
    pass


@transaction.atomic
def load_preset(name: str) -> list[tuple[Program, bool]]:
    """Create or update the preset's programmes (idempotent). Returns (programme, created) pairs."""
    if name not in PRESETS:
        raise UnknownPreset(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    loaded = []
    # Saving a programme records a version only when its configuration differs from the latest
    # one (referrals.engine.versions), so loading the same preset again adds none.
    with versions.authored(source="load_preset"):
        for spec in PRESETS[name]:
            defaults = {field: value for field, value in spec.items() if field != "key"}
            defaults.setdefault("enabled", True)
            program, created = Program.objects.update_or_create(key=spec["key"],
                                                                defaults={**defaults, "preset": name})
            program.full_clean()
            loaded.append((program, created))
    return loaded
