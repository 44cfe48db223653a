"""The fake Stripe of payouts/fakes/stripe.py extended with the billing objects the connector reads:
customers, invoices, charges, refunds and disputes, listed newest first with `created[gte]`,
`limit`, `starting_after` and `has_more` as Stripe's list endpoints do. The builders below make
the objects (in the 2025-02-24.acacia shape) that a test both lists here and sends as signed
webhooks, so both paths see the same Stripe account."""
import json

from payouts.fakes.stripe import FakeStripe, _error, sign

RESOURCES = {"customers": "customer", "invoices": "invoice", "charges": "charge", "refunds": "refund",
             "disputes": "dispute"}


class FakeStripeBilling(FakeStripe):
    def __init__(self, *, secret_key: str = "rk_test_fake"):
        super().__init__(secret_key=secret_key)
        self.objects: dict[str, dict[str, dict]] = {resource: {} for resource in RESOURCES}
        self.fail_requests: dict[str, list[int]] = {}  # path -> [requests to let through, failures to answer]
        self.lists: list[tuple[str, dict]] = []  # (resource, parameters) of every list request
        # From API version 2025-03-31.basil the link between invoice and charge lives here only.
        self.invoice_payments: list[dict] = []
        self.payment_intents: dict[str, dict] = {}

    def add(self, obj: dict) -> dict:
        resource = next(r for r, kind in RESOURCES.items() if kind == obj["object"])
        with self.lock:
            self.objects[resource][obj["id"]] = obj
        return obj

    def pay_invoice(self, invoice_id: str, *, payment_intent: str, charge: str, amount: int):
        """Record a basil-style payment of an invoice: an invoice payment and its payment intent."""
        with self.lock:
            self.payment_intents[payment_intent] = {"id": payment_intent, "object": "payment_intent",
                                                    "amount": amount, "latest_charge": charge,
                                                    "status": "succeeded"}
            self.invoice_payments.append({
                "id": f"inpay_{invoice_id}", "object": "invoice_payment", "invoice": invoice_id,
                "amount_paid": amount, "status": "paid", "is_default": True,
                "payment": {"type": "payment_intent", "payment_intent": payment_intent}})

    def fail_request(self, path: str, nth: int, *, times: int = 1):
        """Answer the nth GET of `path` (from now, 1-based) and the `times - 1` after it with a 500,
        as an outage would (the SDK retries a 500 by itself)."""
        with self.lock:
            self.fail_requests[path] = [nth - 1, times]

    def _route(self, method, path, params):
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 2 and parts[0] == "v1" and parts[1] in RESOURCES:
            self.lists.append((parts[1], params))
            plan = self.fail_requests.get(path)
            if plan and plan[0] > 0:
                plan[0] -= 1
            elif plan:
                plan[1] -= 1
                if plan[1] == 0:
                    del self.fail_requests[path]
                return _error(500, "An unknown error occurred", type_="api_error")
            return self._list(parts[1], params)
        if method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "lines":
            found = self.objects["invoices"].get(parts[2])
            if found is None:
                return _error(404, f"No such invoice: '{parts[2]}'", code="resource_missing")
            lines = found["lines"]["data"]
            after = params.get("starting_after")
            if after:
                lines = lines[[line["id"] for line in lines].index(after) + 1:]
            limit = int(params.get("limit", 10))
            return 200, {"object": "list", "url": path, "has_more": len(lines) > limit, "data": lines[:limit]}
        if method == "GET" and parts == ["v1", "invoice_payments"]:
            self.lists.append(("invoice_payments", params))
            wanted = params.get("payment") or {}
            found = [p for p in self.invoice_payments
                     if params.get("invoice") in (None, p["invoice"])
                     and wanted.get("payment_intent") in (None, p["payment"]["payment_intent"])]
            return 200, {"object": "list", "url": "/v1/invoice_payments", "has_more": False,
                         "data": found[:int(params.get("limit", 10))]}
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "payment_intents"]:
            found = self.payment_intents.get(parts[2])
            return (200, found) if found else _error(404, f"No such payment_intent: '{parts[2]}'",
                                                     code="resource_missing")
        return super()._route(method, path, params)

    def _list(self, resource: str, params: dict):
        since = int((params.get("created") or {}).get("gte", 0))
        found = [o for o in self.objects[resource].values() if o["created"] >= since
                 and (resource != "invoices" or params.get("status") in (None, o["status"]))]
        found.sort(key=lambda o: (o["created"], o["id"]), reverse=True)  # newest first, like Stripe
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in found]
            if after not in ids:
                return _error(400, f"No such object: '{after}'", code="resource_missing")
            found = found[ids.index(after) + 1:]
        limit = int(params.get("limit", 10))
        return 200, {"object": "list", "url": f"/v1/{resource}", "has_more": len(found) > limit,
                     "data": found[:limit]}


# --------------------------------------------------------------------------- objects (2025-02-24.acacia)


def customer(customer_id: str, *, created: int, email: str | None = None, **metadata) -> dict:
    return {"id": customer_id, "object": "customer", "created": created, "email": email, "livemode": False,
            "name": None, "metadata": {k: v for k, v in metadata.items() if v is not None}}


def invoice(invoice_id: str, *, customer: str, created: int, lines: list[tuple[str, str, int]],
            charge: str | None, currency: str = "usd", status: str = "paid", amount_paid: int | None = None) -> dict:
    """`lines`: (price id, product id, minor units) per line."""
    data = [{"id": f"il_{invoice_id}_{n}", "object": "line_item", "amount": amount, "currency": currency,
             "discount_amounts": [], "price": {"id": price, "object": "price", "product": product},
             "quantity": 1} for n, (price, product, amount) in enumerate(lines, 1)]
    total = sum(amount for *_, amount in lines)
    return {"id": invoice_id, "object": "invoice", "created": created, "customer": customer, "currency": currency,
            "status": status, "amount_due": total, "total": total,
            "amount_paid": total if amount_paid is None and status == "paid" else amount_paid or 0,
            "charge": charge, "paid": status == "paid", "status_transitions": {"paid_at": created},
            "lines": {"object": "list", "data": data, "has_more": False, "url": f"/v1/invoices/{invoice_id}/lines"}}


def charge(charge_id: str, *, customer: str | None, amount: int, created: int, invoice: str | None = None,
           amount_refunded: int = 0, currency: str = "usd", refunds: list[dict] | None = None) -> dict:
    obj = {"id": charge_id, "object": "charge", "created": created, "customer": customer, "amount": amount,
           "amount_captured": amount, "amount_refunded": amount_refunded, "currency": currency,
           "invoice": invoice, "paid": True, "captured": True, "status": "succeeded",
           "refunded": amount_refunded == amount, "disputed": False}
    if refunds is not None:
        obj["refunds"] = {"object": "list", "data": refunds, "has_more": False}
    return obj


def refund(refund_id: str, *, charge: str, amount: int, created: int, status: str = "succeeded") -> dict:
    return {"id": refund_id, "object": "refund", "created": created, "charge": charge, "amount": amount,
            "currency": "usd", "status": status}


def dispute(dispute_id: str, *, charge: str, amount: int, created: int, status: str = "lost") -> dict:
    return {"id": dispute_id, "object": "dispute", "created": created, "charge": charge, "amount": amount,
            "currency": "usd", "status": status, "reason": "fraudulent"}


def basil(obj: dict, **extra) -> dict:
    """The same object as API version 2025-03-31.basil or newer shapes it: no `charge` on an
    invoice, no `invoice` on a charge."""
    return {**{k: v for k, v in obj.items() if k not in ("charge", "invoice", "paid")}, **extra}


def webhook(event_id: str, type_: str, obj: dict, *, secret: str, timestamp: int | None = None) -> tuple[bytes, str]:
    """A delivery as Stripe makes it: the event's JSON body and its `Stripe-Signature` header."""
    body = json.dumps({"id": event_id, "object": "event", "type": type_, "created": obj["created"],
                       "api_version": "2025-02-24.acacia", "livemode": False, "pending_webhooks": 1,
                       "data": {"object": obj}})
    return body.encode(), sign(body, secret, timestamp=timestamp)
