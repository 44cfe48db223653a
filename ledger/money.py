"""Exact money: amounts are integers of ledger units (10^-10 of the currency unit).

Why 10^-10: event amounts carry at most 6 decimals and rates at most 2 decimals of a
percent (a basis point), so rate x amount is always a whole number of units. Nothing is
rounded when a commission accrues; only cash movements and displays round to the cent.
A signed 64-bit integer holds up to ~922 million currency units per value, and SQL SUM()
over integers is exact on SQLite and PostgreSQL alike.
"""
import re
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

PLACES = 10
UNITS = 10**PLACES
CENT = UNITS // 100
INPUT_PLACES = 6
RATE_PLACES = 2  # a percent with two decimals: 2.25 means 2.25 %
MAX_EVENT_AMOUNT = Decimal("1000000")


# A plain decimal as written by people and billing systems: no exponent, no separators,
# no non-ASCII digits, no explicit plus sign.
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class AmountError(ValueError):
    """A value that is not an acceptable amount; the message says why, in words."""


def parse_amount(value, *, places: int = INPUT_PLACES, maximum: Decimal = MAX_EVENT_AMOUNT) -> int:
    """Parse a decimal string from the wire into ledger units, refusing anything inexact."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise AmountError("must be a decimal string, e.g. \"12.34\"")
    if isinstance(value, str) and not PLAIN_DECIMAL.fullmatch(value.strip()):
        raise AmountError("is not a valid decimal number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise AmountError("is not a valid decimal number") from None
    if not amount.is_finite():
        raise AmountError("is not a valid decimal number")
    if amount <= 0:
        raise AmountError("must be greater than zero")
    if amount > maximum:
        raise AmountError(f"must be at most {maximum}")
    if amount != amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR):
        raise AmountError(f"must have at most {places} decimal places")
    return to_units(amount)


def to_units(amount: Decimal | int | str) -> int:
    """Exact conversion of a decimal amount to ledger units; refuses sub-unit fractions."""
    scaled = Decimal(str(amount)).scaleb(PLACES)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"has more than {PLACES} decimal places")
    return int(scaled)


def to_decimal(units: int) -> Decimal:
    return Decimal(int(units)).scaleb(-PLACES)


def floor_to_cents(units: int) -> int:
    """Round down to a whole cent: what may actually be paid or shown as available."""
    return (int(units) // CENT) * CENT


def format_cents(units: int) -> str:
    """Display form: whole cents, rounded towards zero so a balance is never overstated.
    (Lists whose rows must add up to a total use `CentCarry` instead.)"""
    units = int(units)
    sign = "-" if units < 0 else ""
    return sign + str(to_decimal(floor_to_cents(abs(units))).quantize(Decimal("0.01")))


class CentCarry:
    """Rounds a list's amounts to the cent so that the rounded rows add up to the rounded total:
    each row's sub-cent remainder is carried into the next instead of being lost (rows of
    0.2468 + 0.2468 show 0.24 + 0.25, total 0.49). `take` returns whole-cent units."""

    def __init__(self):
        self.running = 0
        self.shown = 0

    def take(self, units: int) -> int:
        self.running += int(units)
        target = _cents_towards_zero(self.running)
        cents, self.shown = target - self.shown, target
        return cents


def _cents_towards_zero(units: int) -> int:
    return floor_to_cents(units) if units >= 0 else -floor_to_cents(-units)


def format_exact(units: int) -> str:
    """Exact form with sub-cent digits kept, at least two decimals: 18.144 -> "18.144"."""
    value = to_decimal(units).normalize()
    if value == value.to_integral_value() or -value.as_tuple().exponent < 2:
        value = value.quantize(Decimal("0.01"))
    return f"{value:f}"


def places_needed(units: int) -> int:
    """How many decimals show `units` exactly, at least two (a cent): 18.144 -> 3."""
    value = to_decimal(units).normalize()
    return max(2, -value.as_tuple().exponent)


def format_places(units: int, places: int) -> str:
    """`units` with exactly `places` decimals; refuses to drop a non-zero digit."""
    value = to_decimal(units)
    shown = value.quantize(Decimal(1).scaleb(-places))
    if shown != value:
        raise ValueError(f"{units} units need more than {places} decimals")
    return f"{shown:f}"


def format_row(values: dict[str, int]) -> dict[str, str]:
    """Several figures of one row at one precision: the most any of them needs (at least
    cents), so a row never mixes "41.7632" with "41.76" (SPEC "Figures agree")."""
    places = max((places_needed(v) for v in values.values()), default=2)
    return {name: format_places(v, places) for name, v in values.items()}


def percent_of(units: int, percent: Decimal) -> int:
    """percent% of an amount in units. Exact for percents with at most two decimals
    applied to wire amounts; otherwise rounded down (the remainder is never created)."""
    basis_points = int((Decimal(percent) * 100).to_integral_value(rounding=ROUND_FLOOR))
    return (int(units) * basis_points) // 10_000


def share_of(units: int, part: int, whole: int) -> int:
    """units x part / whole, rounded down: the proportional share used by partial refunds."""
    if whole <= 0:
        raise ValueError("whole must be positive")
    return (int(units) * int(part)) // int(whole)


def net_sum(field: str, minus: str):
    """SUM(field - minus) typed as a 64-bit integer. Django would type the difference of two
    BigIntegerFields as a 32-bit IntegerField, and on PostgreSQL a filter comparing it with
    more than ~$0.21 in units then silently matches nothing."""
    from django.db.models import BigIntegerField, F, Sum

    return Sum(F(field) - F(minus), output_field=BigIntegerField())
