"""How every page and the admin write money and dates: `{{ units|money }}` gives "$1,234.56"
(rounded towards zero, thousands separators, the currency sign), `{{ units|money_exact }}` the
same with sub-cent digits kept, `{{ when|day }}` "2 Dec 2026"; `{% partner_track_offered %}` for
the dashboard's tabs. Loaded as a template builtin
(settings.TEMPLATES), so no template needs `{% load %}` and no page formats on its own."""
from decimal import Decimal

from django import template
from django.conf import settings
from django.utils.dateformat import format as date_format
from django.utils.timezone import is_aware, localtime

from ledger.money import format_cents, format_exact

register = template.Library()

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
MINUS = "−"  # U+2212, a real minus sign: the same width as the plus, never a hyphen that wraps
DAY_FORMAT = "j M Y"


def currency_symbol() -> str:
    currency = settings.REFERRAL["CURRENCY"]
    return CURRENCY_SYMBOLS.get(currency, f"{currency} ")


def money_text(units, *, exact: bool = False, signed: bool = False) -> str:
    """Ledger units as people read them: "$1,234.56", "−$0.24", "+$12.00" (signed)."""
    if units is None or units == "":
        return ""
    units = int(units)
    digits = (format_exact if exact else format_cents)(abs(units))
    whole, _, fraction = digits.partition(".")
    text = f"{currency_symbol()}{int(whole):,}.{fraction}"
    if units < 0 and Decimal(digits) != 0:
        return MINUS + text
    return ("+" + text) if signed and units > 0 else text


@register.filter
def money(units):
    return money_text(units)


@register.filter
def money_exact(units):
    return money_text(units, exact=True)


@register.filter
def money_signed(units):
    return money_text(units, signed=True)


@register.filter
def masked_email(email: str) -> str:
    """Who a referral is, without giving the address away: "dora@example.com" -> "d•••a@e•••.com"
    (the first and last letter of the name tell referrals apart, the rest stays hidden)."""
    local, _, domain = (email or "").partition("@")
    if not domain:
        return ""
    name, dot, tld = domain.rpartition(".")
    shown = f"{local[:1]}•••{local[-1:]}" if len(local) > 3 else f"{local[:1]}•••"
    return f"{shown}@{(name or tld)[:1]}•••{dot}{tld if name else ''}"


@register.filter
def day(value):
    """One date style everywhere: "2 Dec 2026" (in the portal's time zone)."""
    if not value:
        return ""
    if hasattr(value, "hour") and is_aware(value):
        value = localtime(value)
    return date_format(value, DAY_FORMAT)


@register.simple_tag
def partner_track_offered() -> bool:
    """Whether any enabled programme has a Partner track (the dashboard shows its tab only then)."""
    from ..models import Program

    return Program.objects.filter(enabled=True, kind=Program.Kind.PURCHASE_COMMISSION,
                                  partner_rate__isnull=False).exists()
