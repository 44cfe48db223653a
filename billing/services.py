"""Turning the operator's Stripe billing into our events, idempotently.

A webhook is verified with the official SDK before anything of it is kept; then the Stripe object
it carries (like every object import_stripe lists) is stored in `Inbound` and handled here. Our
event ids are derived from Stripe *object* ids (`stripe:cus_…`, `stripe:in_…`, `stripe:ch_…`),
not from event ids: Stripe sends both `invoice.paid` and `invoice.payment_succeeded` for one
payment, and the backfill sees objects, never events, so only the object id is the same on
every path. Deliveries are deduplicated by the Stripe event id (`Inbound.key`).

Refunds are settled, not replayed: every source (a charge's `amount_refunded`, refund objects,
lost disputes) raises what we know has been refunded of a charge, and `settle` writes the
difference from what our log already holds as `payment.refunded` events, under a lock on the
payment. So duplicates and any order of arrival end at the same total, counted once.
"""
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from referrals.engine import events as ev
from referrals.engine.ingestion import ingest_batch
from referrals.models import Account, AuditLog

from .models import (
    ChargeState,
    ImportCursor,
    Inbound,
    Payment,
    PriceMapping,
    RefundSeen,
    StripeConnection,
    StripeCustomer,
)

log = logging.getLogger(__name__)

# Stripe's amounts are integers of the currency's smallest unit; these are the exceptions to two
# decimals (https://docs.stripe.com/currencies#zero-decimal, #three-decimal).
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
                "xaf", "xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
# The API version import_stripe reads with: the last one whose invoices carry `charge` and whose
# charges carry `invoice` (2025-03-31.basil removed both), so the backfill needs no extra calls.
# Webhooks of newer versions work too: their links are asked of the API (see `_invoice_charge`).
API_VERSION = "2025-02-24.acacia"
CHARGE_MAPPING = "charge"
Status = Inbound.Status


class Rejected(Exception):
    """A delivery refused before anything of it is stored: answered 400."""


@dataclass
class Outcome:
    status: str
    note: str = ""
    customer_id: str = ""
    charge_id: str = ""
    unmapped: list = field(default_factory=list)
    # (field, value) of Inbound rows to process again afterwards: a customer was linked, a payment recorded.
    retry: list = field(default_factory=list)


# --------------------------------------------------------------------------- amounts


def exponent(currency: str) -> int:
    currency = currency.lower()
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def minor_to_decimal(units: int, currency: str) -> str:
    """Stripe's integer minor units as our decimal string, exactly (1999 usd -> "19.99")."""
    return f"{Decimal(int(units)).scaleb(-exponent(currency)):f}"


def _currency_problem(currency) -> str:
    wanted = settings.REFERRAL["CURRENCY"].lower()
    if not isinstance(currency, str) or currency.lower() != wanted:
        return (f"currency {str(currency).upper()!r} is not the deployment's {wanted.upper()} "
                "(REFERRAL_CURRENCY); nothing was recorded")
    return ""


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` over weights exactly (largest remainder; ties to the earlier)."""
    weights = [max(w, 0) for w in weights]
    whole = sum(weights)
    if whole == 0:
        return [total] + [0] * (len(weights) - 1)
    shares = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:total - sum(shares)]:
        shares[i] += 1
    return shares


def fill(total: int, amounts: list[int]) -> list[int]:
    """How much of `total` each amount takes, in order (a refund fills the first event first)."""
    out = []
    for amount in amounts:
        take = min(max(total, 0), amount)
        out.append(take)
        total -= take
    return out


MAX_INT = 2**53  # amounts and Unix times beyond this are not Stripe's; refused rather than overflowing a column


def _int(value, default: int = 0) -> int:
    """A whole number as Stripe writes one (never a bool, a string or out of range), else `default`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_INT:
        return default
    return value


def _iso(unix) -> str:
    unix = _int(unix)
    if unix > 253402300799:  # after 9999-12-31: not a time at all
        unix = 0
    return datetime.fromtimestamp(unix, tz=UTC).isoformat().replace("+00:00", "Z")


def _id(value) -> str:
    """A Stripe reference: an id string, or an expanded object's id ("" when absent or absurd)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 120 else ""


# --------------------------------------------------------------------------- receiving


def connection() -> StripeConnection | None:
    return StripeConnection.objects.filter(is_active=True).order_by("id").first()


def refuse(reason: str) -> Rejected:
    """A refusal decided before the body is read (the view's size check), counted the same way."""
    return _reject(connection(), reason)


def _reject(conn: StripeConnection | None, reason: str) -> Rejected:
    if conn is not None:
        StripeConnection.objects.filter(pk=conn.pk).update(
            rejected_count=F("rejected_count") + 1, last_rejected_at=timezone.now(), last_rejected_reason=reason[:200])
    log.warning("stripe billing webhook refused: %s", reason)
    return Rejected(reason)


def _bad_text(value) -> bool:
    """NUL characters and lone surrogates: JSON may spell them, the database cannot store them."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_text(v) for v in value)
    return False


def receive_webhook(*, body: bytes, signature: str) -> Inbound:
    """Verify one delivery with the SDK, keep it (once per Stripe event id) and handle it.
    Raises Rejected, storing nothing but the connection's refusal counter, when it is not a
    verified Stripe event."""
    conn = connection()
    if conn is None:
        raise _reject(None, "no active Stripe connection is configured (admin: Stripe connection)")
    if len(body) > settings.STRIPE_BILLING_MAX_BODY_BYTES:
        raise _reject(conn, f"body larger than {settings.STRIPE_BILLING_MAX_BODY_BYTES} bytes")
    if not signature or len(signature) > 2000:
        raise _reject(conn, "Stripe-Signature: missing or malformed")
    try:
        stripe.Webhook.construct_event(body, signature, conn.signing_secret,
                                       tolerance=settings.STRIPE_WEBHOOK_TOLERANCE)
        event = json.loads(body)
    except stripe.SignatureVerificationError as exc:
        raise _reject(conn, f"Stripe-Signature: {exc.user_message or exc}") from None
    except (ValueError, AttributeError, TypeError):
        # Not UTF-8, not JSON, or JSON but not an object (the SDK trips over a list): though signed.
        raise _reject(conn, "body: not a JSON object") from None
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(obj, dict) and isinstance(event.get("id"), str) and isinstance(event.get("type"), str)
            and isinstance(obj.get("id"), str) and 0 < len(event["id"]) <= 200 and len(event["type"]) <= 80
            and 0 < len(obj["id"]) <= 120):
        raise _reject(conn, "body: not a Stripe event (id, type, data.object)")
    if _bad_text(event):
        raise _reject(conn, "body: holds a NUL character or a lone surrogate")
    created = _int(event.get("created"))
    try:
        with transaction.atomic():
            inbound, new = Inbound.objects.get_or_create(key=event["id"], defaults={
                "source": Inbound.Source.WEBHOOK, "type": event["type"], "object_id": obj["id"],
                "stripe_created": created, "body": body.decode()})
    except IntegrityError:  # a concurrent delivery of the same event stored it first
        return Inbound.objects.get(key=event["id"])
    if not new and inbound.status not in Inbound.RETRYABLE:
        return inbound  # a redelivery of an event already handled
    return process(inbound, conn=conn)


def import_object(kind: str, obj: dict, *, conn: StripeConnection) -> Inbound:
    """One object listed by import_stripe, stored like a delivery and handled the same way."""
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    inbound, new = Inbound.objects.get_or_create(key=f"import:{obj['id']}", defaults={
        "source": Inbound.Source.IMPORT, "type": kind, "object_id": obj["id"],
        "stripe_created": _int(obj.get("created")), "body": body})
    if not new:
        if inbound.body == body and inbound.status not in Inbound.RETRYABLE:
            return inbound
        Inbound.objects.filter(pk=inbound.pk).update(body=body)
        inbound.body = body
    return process(inbound, conn=conn)


# --------------------------------------------------------------------------- processing


def _object_of(inbound: Inbound) -> dict:
    data = json.loads(inbound.body)
    return data if inbound.source == Inbound.Source.IMPORT else data["data"]["object"]


def process(inbound: Inbound, *, conn: StripeConnection | None = None, depth: int = 0) -> Inbound:
    """Handle one stored object: record our events, or say why not (waiting, needs a mapping,
    needs attention). Safe to run again at any time."""
    conn = conn or connection() or StripeConnection()
    handler = HANDLERS.get(inbound.type)
    try:
        with transaction.atomic():
            if handler is None:
                outcome = Outcome(Status.IGNORED, f"{inbound.type} is not used by the connector")
            else:
                obj = _object_of(inbound)
                if _bad_text(obj):
                    outcome = Outcome(Status.NEEDS_ATTENTION, "holds a NUL character or a lone surrogate")
                else:
                    outcome = handler(obj, conn, inbound.stripe_created)
            Inbound.objects.filter(pk=inbound.pk).update(
                status=outcome.status, note=outcome.note[:2000], unmapped=outcome.unmapped,
                customer_id=outcome.customer_id, charge_id=outcome.charge_id, attempts=F("attempts") + 1,
                processed_at=timezone.now())
    except Exception as exc:
        log.exception("stripe object %s (%s) could not be processed", inbound.object_id, inbound.type)
        outcome = Outcome(Status.FAILED, f"{type(exc).__name__}: {exc}")
        Inbound.objects.filter(pk=inbound.pk).update(status=outcome.status, note=outcome.note[:2000],
                                                     attempts=F("attempts") + 1, processed_at=timezone.now())
    if depth < 3:
        for name, value in outcome.retry:
            retry(**{name: value}, conn=conn, depth=depth + 1, exclude=inbound.pk)
    inbound.refresh_from_db()
    return inbound


def retry(*, customer_id: str = "", charge_id: str = "", needs_mapping: bool = False, ids=None,
          conn: StripeConnection | None = None, depth: int = 0, exclude: int | None = None) -> int:
    """Process again the stored objects that were waiting for something that has now happened."""
    rows = Inbound.objects.filter(status__in=Inbound.RETRYABLE)
    if customer_id:
        rows = rows.filter(customer_id=customer_id)
    if charge_id:
        rows = rows.filter(charge_id=charge_id)
    if needs_mapping:
        rows = rows.filter(status=Status.NEEDS_MAPPING)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    if exclude is not None:
        rows = rows.exclude(pk=exclude)
    done = 0
    # Stripe's order first: a customer before its invoices, a charge before its refunds.
    for inbound in rows.order_by("stripe_created", "id")[:1000]:
        done += process(inbound, conn=conn, depth=depth).status == Status.PROCESSED
    return done


def _ingest(raws: list[dict]) -> tuple[bool, str, str]:
    """Send our events through the one ingestion path; all or none (a savepoint)."""
    try:
        with transaction.atomic():
            results = ingest_batch(raws)
            refused = [r for r in results if r.status == "rejected"]
            if refused:
                raise _Refused(refused[0])
    except _Refused as exc:
        return False, exc.result.code, f"our event {exc.result.id} was refused: {exc.result.message}"
    return True, "", ""


class _Refused(Exception):
    def __init__(self, result):
        self.result = result


# --------------------------------------------------------------------------- customers


def _metadata_text(obj: dict, key: str) -> str:
    value = (obj.get("metadata") or {}).get(key) if isinstance(obj.get("metadata"), dict) else None
    return value.strip() if isinstance(value, str) else ""


def on_customer(obj: dict, conn: StripeConnection, created: int) -> Outcome:
    customer_id = obj["id"]
    if obj.get("deleted"):
        return Outcome(Status.IGNORED, "a deleted customer", customer_id=customer_id)
    customer, _ = StripeCustomer.objects.get_or_create(customer_id=customer_id,
                                                       defaults={"stripe_created": _int(obj.get("created"))})
    customer = StripeCustomer.objects.select_for_update().get(pk=customer.pk)
    if customer.linked_at:
        return Outcome(Status.PROCESSED, f"linked to account {customer.account}", customer_id=customer_id)
    account = _metadata_text(obj, conn.account_metadata_key) or customer.account
    if not account:
        return Outcome(Status.NEEDS_MAPPING, f"customer {customer_id} has no {conn.account_metadata_key!r} in its "
                       "metadata: add it in Stripe, or set the account on the Stripe customer here",
                       customer_id=customer_id)
    email = obj.get("email")[:254] if isinstance(obj.get("email"), str) else ""
    if not Account.objects.filter(external_id=account).exists():
        if not email:
            return Outcome(Status.NEEDS_ATTENTION, f"account {account!r} is new and the customer has no e-mail, "
                           "which account.created needs", customer_id=customer_id)
        raw = {"id": f"stripe:{customer_id}", "type": ev.ACCOUNT_CREATED, "account": account, "email": email,
               "occurred_at": _iso(obj.get("created") or created)}
        for name, key in (("referral_code", conn.referral_code_metadata_key),
                          ("click_id", conn.click_id_metadata_key)):
            if value := _metadata_text(obj, key):
                raw[name] = value
        ok, code, message = _ingest([raw])
        if not ok and code != "account_exists":
            return Outcome(Status.NEEDS_ATTENTION, message, customer_id=customer_id)
    StripeCustomer.objects.filter(pk=customer.pk).update(account=account, email=email, linked_at=timezone.now())
    return Outcome(Status.PROCESSED, f"linked to account {account}", customer_id=customer_id,
                   retry=[("customer_id", customer_id)])


def _account_of(customer_id: str) -> tuple[str, Outcome | None]:
    """The linked account of a customer, or why the object must wait or be mapped."""
    if not customer_id:
        return "", Outcome(Status.IGNORED, "no customer: a payment without one cannot be attributed")
    customer = StripeCustomer.objects.filter(customer_id=customer_id).first()
    if customer is None:
        return "", Outcome(Status.WAITING, f"waiting for customer {customer_id}", customer_id=customer_id)
    if not customer.linked_at:
        return "", Outcome(Status.NEEDS_MAPPING, f"customer {customer_id} is not mapped to an account",
                           customer_id=customer_id)
    return customer.account, None


@transaction.atomic
def customer_map(*, customer: StripeCustomer, account: str, actor) -> int:
    """Staff set the account of a customer Stripe sent without one; its objects are processed again
    (returns how many are now applied)."""
    StripeCustomer.objects.filter(pk=customer.pk, linked_at__isnull=True).update(account=account)
    AuditLog.objects.create(actor=actor, action="stripe_customer.map", object_type="StripeCustomer",
                            object_id=customer.customer_id, reason=f"account {account}")
    return retry(customer_id=customer.customer_id)


# --------------------------------------------------------------------------- purchases


def _mapping_for(ids: list[str], mappings: dict) -> PriceMapping | None:
    return next((mappings[i] for i in ids if i in mappings), None)


def _line_ids(line: dict) -> list[str]:
    """A line's price then product id, in the shapes of old and new API versions."""
    price = line.get("price") if isinstance(line.get("price"), dict) else {}
    details = (line.get("pricing") or {}).get("price_details") or {} if isinstance(line.get("pricing"), dict) else {}
    ids = [_id(price), _id(price.get("product")), _id(details.get("price")), _id(details.get("product"))]
    plan = line.get("plan") if isinstance(line.get("plan"), dict) else {}
    ids += [_id(plan), _id(plan.get("product"))]
    return [i for i in dict.fromkeys(ids) if i]


def _event_raw(mapping: PriceMapping, *, event_id: str, account: str, amount: str, occurred_at: str) -> dict:
    raw = {"id": event_id, "type": mapping.event_type, "account": account, "amount": amount,
           "occurred_at": occurred_at}
    if mapping.event_type == ev.PLAN_PURCHASED:
        raw["plan"] = mapping.product_line
    elif mapping.event_type == ev.USAGE_CHARGED:
        raw["product"] = mapping.product_line
    return raw


def _record_payment(*, key: str, charge_id: str, customer_id: str, account: str, currency: str,
                    groups: list[tuple[PriceMapping, int]], occurred_at: str) -> Outcome:
    total = sum(amount for _, amount in groups)
    events, raws = [], []
    for index, (mapping, amount) in enumerate(groups):
        if amount <= 0:
            continue
        event_id = f"stripe:{key}" if len(groups) == 1 else f"stripe:{key}:{index + 1}"
        events.append([event_id, amount])
        raws.append(_event_raw(mapping, event_id=event_id, account=account, occurred_at=occurred_at,
                               amount=minor_to_decimal(amount, currency)))
    ok, _, message = _ingest(raws)
    if not ok:
        return Outcome(Status.NEEDS_ATTENTION, message, customer_id=customer_id, charge_id=charge_id)
    payment = Payment.objects.create(key=key, charge_id=charge_id, customer_id=customer_id, account=account,
                                     amount=total, currency=currency.lower(), events=events)
    note = settle(payment)
    summary = ", ".join(f"{e} {minor_to_decimal(a, currency)}" for e, a in events)
    return Outcome(Status.PROCESSED, f"recorded {summary}{'; ' + note if note else ''}", customer_id=customer_id,
                   charge_id=charge_id, retry=[("charge_id", charge_id)] if charge_id else [])


class NeedsKey(Exception):
    """A newer API version's object that only the API can tie to its invoice or charge."""


def _api(conn: StripeConnection) -> stripe.StripeClient:
    if not conn.api_key:
        raise NeedsKey("this object (API version 2025-03-31.basil or newer) can only be tied to its "
                       "invoice or charge through the API: save a restricted key on the Stripe connection")
    return import_client(conn)


def _invoice_charge(obj: dict, conn: StripeConnection) -> str:
    """The charge that paid an invoice: `charge` up to 2025-02-24.acacia; from basil on, through the
    invoice's payments (included in the object, or asked of the API)."""
    if "charge" in obj:
        return _id(obj.get("charge"))
    payments = obj.get("payments") if isinstance(obj.get("payments"), dict) else None
    client = None
    if payments is None or payments.get("has_more"):
        client = _api(conn)
        data = plain(client.v1.invoice_payments.list(params={"invoice": obj["id"], "limit": 100}).data)
    else:
        data = payments.get("data") or []
    for invoice_payment in data:
        if not isinstance(invoice_payment, dict) or invoice_payment.get("status") != "paid":
            continue
        payment = invoice_payment.get("payment") if isinstance(invoice_payment.get("payment"), dict) else {}
        if _id(payment.get("charge")):
            return _id(payment.get("charge"))
        intent = payment.get("payment_intent")
        if isinstance(intent, dict) and _id(intent.get("latest_charge")):
            return _id(intent.get("latest_charge"))
        if _id(intent):
            client = client or _api(conn)
            return _id(plain(client.v1.payment_intents.retrieve(_id(intent))).get("latest_charge"))
    return ""


def _charge_invoice(obj: dict, conn: StripeConnection) -> str:
    """The invoice a charge paid ("" for a one-off): `invoice` up to acacia; from basil on, the
    invoice payment of its payment intent, asked of the API."""
    if "invoice" in obj:
        return _id(obj.get("invoice"))
    intent = _id(obj.get("payment_intent"))
    if not intent:
        return ""
    found = _api(conn).v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": intent}, "limit": 1})
    return _id(plain(found.data)[0].get("invoice")) if found.data else ""


def _lock_customer(customer_id: str) -> None:
    """Payments of one customer are recorded one at a time: the second of two racing deliveries
    (invoice.paid and invoice.payment_succeeded arrive together) then finds the payment recorded."""
    if customer_id:
        list(StripeCustomer.objects.select_for_update().filter(customer_id=customer_id).values_list("pk", flat=True))


def on_invoice(obj: dict, conn: StripeConnection, created: int) -> Outcome:
    invoice_id, customer_id = obj["id"], _id(obj.get("customer"))
    _lock_customer(customer_id)
    if obj.get("status") != "paid":
        return Outcome(Status.IGNORED, f"invoice is {obj.get('status')!r}, not paid", customer_id=customer_id)
    try:
        charge_id = _invoice_charge(obj, conn)
    except NeedsKey as exc:
        return Outcome(Status.NEEDS_ATTENTION, str(exc), customer_id=customer_id)
    existing = Payment.objects.filter(key=invoice_id).first()
    if existing is not None:
        if charge_id and not existing.charge_id:
            Payment.objects.filter(pk=existing.pk).update(charge_id=charge_id)
            existing.charge_id = charge_id
        note = settle(existing)
        return Outcome(Status.PROCESSED, f"already recorded{'; ' + note if note else ''}", customer_id=customer_id,
                       charge_id=existing.charge_id)
    paid = _int(obj.get("amount_paid"))
    if paid <= 0:
        return Outcome(Status.IGNORED, "nothing was paid", customer_id=customer_id)
    if problem := _currency_problem(obj.get("currency")):
        return Outcome(Status.NEEDS_ATTENTION, problem, customer_id=customer_id)
    account, waiting = _account_of(customer_id)
    if waiting:
        return waiting
    lines_list = obj.get("lines") if isinstance(obj.get("lines"), dict) else {}
    lines = [line for line in lines_list.get("data") or [] if isinstance(line, dict)]
    if lines_list.get("has_more"):
        # Stripe embeds only the first lines of a long invoice; the rest are asked of the API.
        try:
            client = _api(conn)
        except NeedsKey:
            return Outcome(Status.NEEDS_ATTENTION, "the invoice has more lines than Stripe sent: save a restricted "
                           "key on the Stripe connection so they can be read", customer_id=customer_id)
        pages = client.v1.invoices.line_items.list(invoice_id, params={"limit": 100})
        lines = [plain(line) for line in pages.auto_paging_iter()]
    line_ids = [_line_ids(line) for line in lines]
    mappings = {m.stripe_id: m for m in PriceMapping.objects.filter(stripe_id__in={i for ids in line_ids
                                                                                     for i in ids})}
    unmapped = sorted({ids[0] if ids else f"line {line.get('id')}" for line, ids in zip(lines, line_ids, strict=True)
                       if _mapping_for(ids, mappings) is None})
    if unmapped or not lines:
        return Outcome(Status.NEEDS_MAPPING, f"no mapping for {', '.join(unmapped) or 'an invoice without lines'}",
                       customer_id=customer_id, unmapped=unmapped)
    # Lines of the same type and product line become one event; what was paid is split over them
    # in proportion to their amounts net of discounts (tax and invoice-level credit included).
    groups: dict[tuple[str, str], list] = {}
    for line, ids in zip(lines, line_ids, strict=True):
        mapping = _mapping_for(ids, mappings)
        discounts = line.get("discount_amounts") if isinstance(line.get("discount_amounts"), list) else []
        discount = sum(_int(d.get("amount")) for d in discounts if isinstance(d, dict))
        group = groups.setdefault((mapping.event_type, mapping.product_line), [mapping, 0])
        group[1] += _int(line.get("amount")) - discount
    shares = allocate(paid, [weight for _, weight in groups.values()])
    transitions = obj.get("status_transitions") if isinstance(obj.get("status_transitions"), dict) else {}
    paid_at = _int(transitions.get("paid_at")) or _int(obj.get("created")) or created
    return _record_payment(key=invoice_id, charge_id=charge_id, customer_id=customer_id, account=account,
                           currency=obj["currency"], occurred_at=_iso(paid_at),
                           groups=[(mapping, share) for (mapping, _), share in zip(groups.values(), shares,
                                                                                   strict=True)])


def on_charge(obj: dict, conn: StripeConnection, created: int) -> Outcome:
    charge_id, customer_id = obj["id"], _id(obj.get("customer"))
    _lock_customer(customer_id)
    refunded = _int(obj.get("amount_refunded"))
    if refunded > 0:
        _observe_charge(charge_id, refunded, created)
    for refund in ((obj.get("refunds") or {}).get("data") or []) if isinstance(obj.get("refunds"), dict) else []:
        if isinstance(refund, dict) and isinstance(refund.get("id"), str):
            _observe_refund(refund, charge_id)
    payment = Payment.objects.filter(charge_id=charge_id).first()
    try:
        invoice_id = "" if payment is not None else _charge_invoice(obj, conn)
    except NeedsKey as exc:
        return Outcome(Status.NEEDS_ATTENTION, str(exc), customer_id=customer_id, charge_id=charge_id)
    if payment is None and invoice_id:
        # An invoice's charge: the invoice is the purchase. Link them (the invoice may come later).
        payment = Payment.objects.filter(key=invoice_id).first()
        if payment is None:
            return Outcome(Status.WAITING, f"charge of invoice {invoice_id}, waiting for the paid invoice",
                           customer_id=customer_id, charge_id=charge_id)
        Payment.objects.filter(pk=payment.pk, charge_id="").update(charge_id=charge_id)
        payment.charge_id = charge_id
    if payment is not None:
        note = settle(payment)
        return Outcome(Status.PROCESSED, f"charge of {payment.key}{'; ' + note if note else ''}",
                       customer_id=customer_id, charge_id=charge_id)
    if obj.get("status") != "succeeded" or not obj.get("paid", True) or not obj.get("captured", True):
        return Outcome(Status.IGNORED, f"charge is {obj.get('status')!r}", charge_id=charge_id)
    if problem := _currency_problem(obj.get("currency")):
        return Outcome(Status.NEEDS_ATTENTION, problem, customer_id=customer_id, charge_id=charge_id)
    account, waiting = _account_of(customer_id)
    if waiting:
        waiting.charge_id = charge_id
        return waiting
    mapping = PriceMapping.objects.filter(stripe_id=CHARGE_MAPPING).first()
    if mapping is None:
        return Outcome(Status.NEEDS_MAPPING, f"no mapping for one-off charges ({CHARGE_MAPPING!r})",
                       customer_id=customer_id, charge_id=charge_id, unmapped=[CHARGE_MAPPING])
    amount = _int(obj.get("amount_captured"), default=_int(obj.get("amount")))
    if amount <= 0:
        return Outcome(Status.IGNORED, "nothing was charged", charge_id=charge_id)
    return _record_payment(key=charge_id, charge_id=charge_id, customer_id=customer_id, account=account,
                           currency=obj["currency"], occurred_at=_iso(obj.get("created") or created),
                           groups=[(mapping, amount)])


# --------------------------------------------------------------------------- refunds and disputes


def _observe_charge(charge_id: str, amount_refunded: int, created: int) -> None:
    state, _ = ChargeState.objects.get_or_create(charge_id=charge_id)
    ChargeState.objects.filter(pk=state.pk, amount_refunded__lt=amount_refunded).update(
        amount_refunded=amount_refunded)


def _observe_refund(refund: dict, charge_id: str) -> None:
    counts = refund.get("status") in ("succeeded", "pending")
    amount = _int(refund.get("amount"))
    RefundSeen.objects.update_or_create(object_id=refund["id"], defaults={
        "charge_id": charge_id, "kind": "refund", "amount": max(amount, 0), "counts": counts})


def on_refund(obj: dict, conn: StripeConnection, created: int) -> Outcome:
    charge_id = _id(obj.get("charge"))
    if not charge_id:
        return Outcome(Status.IGNORED, "a refund without a charge")
    _observe_refund(obj, charge_id)
    return _settle_charge(charge_id)


def on_dispute(obj: dict, conn: StripeConnection, created: int) -> Outcome:
    charge_id = _id(obj.get("charge"))
    if not charge_id:
        return Outcome(Status.IGNORED, "a dispute without a charge")
    lost = obj.get("status") == "lost"
    amount = _int(obj.get("amount"))
    RefundSeen.objects.update_or_create(object_id=obj["id"], defaults={
        "charge_id": charge_id, "kind": "dispute", "amount": max(amount, 0), "counts": lost})
    if not lost:
        return Outcome(Status.IGNORED, f"dispute is {obj.get('status')!r}, not lost", charge_id=charge_id)
    return _settle_charge(charge_id)


def _settle_charge(charge_id: str) -> Outcome:
    payment = Payment.objects.filter(charge_id=charge_id).first()
    if payment is None:
        return Outcome(Status.WAITING, f"waiting for charge {charge_id}", charge_id=charge_id)
    note = settle(payment)
    return Outcome(Status.NEEDS_ATTENTION if note.startswith("!") else Status.PROCESSED,
                   note.lstrip("!") or f"nothing more to refund of {payment.key}", charge_id=charge_id)


def settle(payment: Payment) -> str:
    """Bring what our log holds as refunded of a payment up to what Stripe has told us."""
    payment = Payment.objects.select_for_update().get(pk=payment.pk)
    if not payment.charge_id:
        return ""
    seen = RefundSeen.objects.filter(charge_id=payment.charge_id, counts=True)
    refunds = seen.filter(kind="refund").aggregate(total=Sum("amount"))["total"] or 0
    disputes = seen.filter(kind="dispute").aggregate(total=Sum("amount"))["total"] or 0
    state = ChargeState.objects.filter(charge_id=payment.charge_id).values_list("amount_refunded", flat=True).first()
    target = min(payment.amount, max(refunds, state or 0) + disputes)
    if target <= payment.refunded:
        return ""
    amounts = [amount for _, amount in payment.events]
    before, after = fill(payment.refunded, amounts), fill(target, amounts)
    raws = []
    for index, ((event_id, _), old, new) in enumerate(zip(payment.events, before, after, strict=True)):
        if new > old:
            suffix = f":{index + 1}" if len(payment.events) > 1 else ""
            raws.append({"id": f"stripe:{payment.key}:refunded:{target}{suffix}", "type": ev.PAYMENT_REFUNDED,
                         "account": payment.account, "amount": minor_to_decimal(new - old, payment.currency),
                         "refunds": event_id, "occurred_at": _iso(int(timezone.now().timestamp()))})
    ok, _, message = _ingest(raws)
    if not ok:
        return f"!{message}"
    Payment.objects.filter(pk=payment.pk).update(refunded=target)
    return f"refunded {minor_to_decimal(target, payment.currency)} of {payment.key} in total"


HANDLERS = {
    "customer.created": on_customer, "customer.updated": on_customer, "customer": on_customer,
    "invoice.paid": on_invoice, "invoice.payment_succeeded": on_invoice, "invoice": on_invoice,
    "charge.succeeded": on_charge, "charge.refunded": on_charge, "charge.updated": on_charge, "charge": on_charge,
    "refund.created": on_refund, "refund.updated": on_refund, "charge.refund.updated": on_refund,
    "refund": on_refund,
    "charge.dispute.closed": on_dispute, "dispute": on_dispute,
}
WEBHOOK_EVENTS = sorted(t for t in HANDLERS if "." in t)


# --------------------------------------------------------------------------- mapping and import


def mapping_saved() -> int:
    """A mapping was added or changed: objects that needed one are processed again."""
    return retry(needs_mapping=True)


def plain(value):
    """An SDK object as plain JSON data."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


IMPORT_ORDER = (("customers", "customer", {}), ("invoices", "invoice", {"status": "paid"}),
                ("charges", "charge", {}), ("refunds", "refund", {}), ("disputes", "dispute", {}))


def import_client(conn: StripeConnection, *, version: str | None = API_VERSION) -> stripe.StripeClient:
    base = settings.STRIPE_API_BASE
    return stripe.StripeClient(conn.api_key, stripe_version=version, max_network_retries=2,
                               base_addresses={"api": base, "connect": base, "files": base},
                               http_client=stripe.RequestsClient(timeout=settings.PAYOUT_PROVIDER_TIMEOUT))


def import_since(*, since: int, restart: bool = False, page_size: int = 100, out=None) -> dict[str, int]:
    """Backfill every object created since `since` through Stripe's list endpoints, resumable: the
    last object done of each list is kept, and a run for the same `since` goes on from there."""
    conn = connection()
    if conn is None or not conn.api_key:
        raise ValueError("no active Stripe connection with a restricted API key (admin: Stripe connection)")
    client = import_client(conn)
    counts = {}
    for resource, kind, extra in IMPORT_ORDER:
        cursor, _ = ImportCursor.objects.get_or_create(object_type=resource, defaults={"since": since})
        if restart or cursor.since != since:
            cursor.since, cursor.starting_after, cursor.done, cursor.count = since, "", False, 0
            cursor.save()
        if cursor.done:
            counts[resource] = 0
            continue
        params = {"created": {"gte": since}, "limit": page_size, **extra}
        if cursor.starting_after:
            params["starting_after"] = cursor.starting_after
        done = 0
        for obj in getattr(client.v1, resource).list(params=params).auto_paging_iter():
            import_object(kind, plain(obj), conn=conn)
            done += 1
            ImportCursor.objects.filter(pk=cursor.pk).update(starting_after=obj["id"], count=F("count") + 1)
        ImportCursor.objects.filter(pk=cursor.pk).update(done=True)
        counts[resource] = done
        if out:
            out(f"{resource}: {done}")
    return counts
