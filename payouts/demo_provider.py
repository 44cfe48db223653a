"""A stand-in for PayPal's Payouts API, served by the portal's own development server so that
`make run`'s demo payouts complete without calling any real provider host.

Mounted under /payouts/dev/fake-paypal/ only when settings.DEBUG and PAYOUT_DEMO_FAKE_PAYPAL are
both on (never in production settings); PAYPAL_API_BASE then points here. It answers the three
calls `providers.paypal` makes: a token, a payout batch (paid at once, its items in the answer,
as PayPal does for a batch it settled synchronously) and a batch read. It keeps no state: the
batch id carries the amount and the idempotency key, so a repeated call gets the same answer."""
import json
from decimal import Decimal

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@csrf_exempt
@require_POST
def token(request):
    return JsonResponse({"access_token": "demo-token", "token_type": "Bearer", "expires_in": 32400})


def _batch(batch_id: str, *, receiver: str = "") -> dict:
    _, cents, _key = batch_id.split("-", 2)
    amount = {"value": f"{Decimal(int(cents)) / 100:.2f}", "currency": "USD"}
    return {"batch_header": {"payout_batch_id": batch_id, "batch_status": "SUCCESS", "amount": amount},
            "items": [{"payout_item_id": f"IT-{batch_id}", "transaction_status": "SUCCESS",
                       "payout_item": {"receiver": receiver, "amount": amount}}]}


@csrf_exempt
@require_POST
def create_batch(request):
    try:
        body = json.loads(request.body)
        item = body["items"][0]
        cents = int(Decimal(item["amount"]["value"]) * 100)
        key = body["sender_batch_header"]["sender_batch_id"]
    except (ValueError, KeyError, IndexError, TypeError, ArithmeticError):
        return JsonResponse({"name": "VALIDATION_ERROR", "message": "Invalid request"}, status=400)
    return JsonResponse(_batch(f"DEMO-{cents}-{key}", receiver=item.get("receiver", "")), status=201)


@require_GET
def read_batch(request, batch_id: str):
    if not batch_id.startswith("DEMO-") or batch_id.count("-") < 2 or not batch_id.split("-")[1].isdigit():
        return JsonResponse({"name": "RESOURCE_NOT_FOUND", "message": "The requested resource was not found"},
                            status=404)
    return JsonResponse(_batch(batch_id))
