"""The Stripe billing webhook: POST /integrations/stripe/webhook/."""
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services


@csrf_exempt
@require_POST
def stripe_webhook(request):
    # Refuse an oversized body before Django reads it (the declared length), and again after.
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > settings.STRIPE_BILLING_MAX_BODY_BYTES:
        return _refused(services.refuse("body: too large, or no valid Content-Length"))
    try:
        inbound = services.receive_webhook(body=request.body,
                                           signature=request.headers.get("Stripe-Signature", ""))
    except services.Rejected as exc:
        return _refused(exc)
    # A failure of ours (or of a Stripe API call it needed) answers 503, so Stripe delivers again;
    # the stored delivery is then processed again.
    status = 503 if inbound.status == inbound.Status.FAILED else 200
    return JsonResponse({"id": inbound.key, "status": inbound.status, "note": inbound.note[:500]}, status=status)


def _refused(exc: services.Rejected) -> JsonResponse:
    field = str(exc).split(":", 1)[0] if ":" in str(exc) else "body"
    return JsonResponse({"error": {"code": "webhook_refused", "message": str(exc), "fields": {field: str(exc)}}},
                        status=400)
