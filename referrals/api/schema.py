"""OpenAPI 3 descriptions for the integration API (drf-spectacular): the bearer key scheme,
the error shape, the event bodies with an example per type, and helpers other API modules
(payouts/api/) use so every endpoint documents the same error statuses."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers

from ..engine import events as ev

AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"
AMOUNT_HELP = ('A decimal string in the deployment currency, greater than zero, at most 1,000,000 and with at most '
               '6 decimals, e.g. "12.50".')


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "referrals.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "rk_<prefix>_<secret>",
                "description": "An API key created by staff (admin or `manage.py create_api_key`), sent as "
                               "`Authorization: Bearer <key>`. Scopes: `events:write`, `read`, `staff`."}


# --------------------------------------------------------------------------- errors


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable, machine-readable error code, e.g. `invalid`, `not_found`.")
    message = serializers.CharField(help_text="A human-readable explanation naming each bad field.")
    fields = serializers.DictField(
        child=serializers.CharField(), help_text="Each bad input (`body` for the body as a whole) and why; "
                                                 "empty when no field is to blame.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer(help_text="What went wrong.")


ERROR_TEXT = {
    400: "Bad input: the body or a parameter is invalid; `fields` names each one. Nothing was changed.",
    401: "No API key, a malformed `Authorization` header, or an unknown, revoked or expired key.",
    403: "The key lacks this endpoint's scope (or is a partner key, which may only read).",
    404: "Unknown object (or one a partner key may not see), or no such path.",
    405: "The method is not allowed on this path.",
    409: "The action is not allowed in the object's current state.",
    413: "The body is larger than 4 MB.",
    429: "Too many requests for this key; `Retry-After` says when to retry.",
}


def error_responses(*statuses: int) -> dict:
    """Error responses for an endpoint: 401/403/404/405/429 always, plus the given ones."""
    wanted = sorted({401, 403, 404, 405, 429, *statuses})
    return {status: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[status]) for status in wanted}


CURSOR_PARAMETER = OpenApiParameter(
    "cursor", str, description="Opaque position in the list; follow the `next` / `previous` links rather "
                               "than building it.")


def paginated(name: str, item: serializers.Serializer) -> serializers.Serializer:
    """The cursor-paginated envelope of a list (newest first, 50 per page)."""
    return type(name, (serializers.Serializer,), {
        "next": serializers.URLField(allow_null=True, help_text="The next (older) page, or null on the last one."),
        "previous": serializers.URLField(allow_null=True, help_text="The previous (newer) page, or null."),
        "results": type(item)(many=True, help_text="The items of this page."),
    })()


# --------------------------------------------------------------------------- events


class _EventBase(serializers.Serializer):
    id = serializers.CharField(max_length=200, help_text="Your unique id for this event: the idempotency key.")
    occurred_at = serializers.DateTimeField(
        help_text="When it happened: ISO 8601 with a time zone, not in the future (5 minutes of skew allowed).")
    account = serializers.CharField(max_length=120, help_text="The operator's account id.")


def _event(component: str, event_type: str, doc: str, **fields) -> type:
    type_field = serializers.ChoiceField(choices=[event_type], help_text=f"Always `{event_type}`.")
    return type(component, (_EventBase,), {"type": type_field, "__doc__": doc, **fields})


def _amount(help_text: str = AMOUNT_HELP):
    return serializers.RegexField(AMOUNT_PATTERN, help_text=help_text)


EVENT_SERIALIZERS = [
    _event("AccountCreatedEvent", ev.ACCOUNT_CREATED, "A new account signed up, optionally through a referral.",
           email=serializers.EmailField(max_length=254, help_text="The account's e-mail (self-referral checks)."),
           referral_code=serializers.CharField(required=False, help_text="The referrer's code from the `?ref=` link."),
           click_id=serializers.CharField(required=False, help_text="The click id the portal's link recorded."),
           ip=serializers.IPAddressField(required=False, help_text="Sign-up IP address (self-referral checks)."),
           device_id=serializers.CharField(required=False, help_text="Sign-up device id (self-referral checks)."),
           template=serializers.CharField(required=False, help_text="The template whose link brought the account.")),
    _event("CreditsPurchasedEvent", ev.CREDITS_PURCHASED, "The account bought platform credits.",
           amount=_amount(),
           payment_fingerprint=serializers.CharField(required=False, help_text="A stable fingerprint of the payment "
                                                                               "method (self-referral checks).")),
    _event("PlanPurchasedEvent", ev.PLAN_PURCHASED, "The account bought a paid plan.",
           amount=_amount(), plan=serializers.CharField(help_text="The plan's name or id, e.g. `pro`.")),
    _event("UsageChargedEvent", ev.USAGE_CHARGED, "The account was charged for usage.",
           amount=_amount(),
           product=serializers.CharField(max_length=60, help_text="The product line: `serverless`, `pods`, `api`, ..."),
           template=serializers.CharField(required=False, help_text="The template the instance was launched from."),
           runtime_seconds=serializers.IntegerField(required=False, min_value=0,
                                                    help_text="Runtime billed by this charge (template gates).")),
    _event("CreditsRedeemedEvent", ev.CREDITS_REDEEMED,
           "The account spent portal credits in the operator's billing; rejected when above its credits.",
           amount=_amount()),
    _event("PaymentRefundedEvent", ev.PAYMENT_REFUNDED, "A purchase or charge was refunded (claws back commission).",
           amount=_amount("The refunded amount; at most what is left to refund of that payment."),
           refunds=serializers.CharField(help_text="The `id` of the purchase or charge event refunded.")),
    _event("TemplatePublishedEvent", ev.TEMPLATE_PUBLISHED, "The account published a public template.",
           template=serializers.RegexField(r"^[A-Za-z0-9._-]+$", max_length=120, help_text="The template's id."),
           name=serializers.CharField(required=False, help_text="The template's display name.")),
]

EVENT = PolymorphicProxySerializer(
    component_name="Event", serializers=EVENT_SERIALIZERS, resource_type_field_name="type",
    help_text="One event; the fields beyond `id`, `type`, `occurred_at` and `account` depend on `type`.")


class EventBatchSerializer(serializers.Serializer):
    events = PolymorphicProxySerializer(
        component_name="BatchEvent", serializers=EVENT_SERIALIZERS, resource_type_field_name="type", many=True,
        help_text="Up to 1000 events, validated and answered one by one, in order.")


EVENTS_BODY = PolymorphicProxySerializer(
    component_name="EventsBody", serializers=[EVENT, EventBatchSerializer], resource_type_field_name=None,
    help_text='One event object, or `{"events": [...]}` with up to 1000 events.')


class EventResultSerializer(serializers.Serializer):
    id = serializers.CharField(allow_blank=True, help_text="The event's `id` as sent (empty if it had none).")
    status = serializers.ChoiceField(
        choices=["accepted", "duplicate", "rejected"],
        help_text="`accepted`: stored (its money effects are visible within a second); `duplicate`: this id was "
                  "accepted before with the same content; `rejected`: nothing of it was kept, see `error`.")
    error = ErrorDetailSerializer(required=False, help_text="Why it was rejected (only for `rejected`).")


class EventsResponseSerializer(serializers.Serializer):
    results = EventResultSerializer(many=True, help_text="One result per event, in input order.")


def _example_event(event_type: str, **fields) -> dict:
    return {"id": f"evt-{event_type.replace('.', '-')}-1", "type": event_type,
            "occurred_at": "2026-11-02T10:00:00Z", "account": "42", **fields}


EVENT_EXAMPLES = [
    OpenApiExample(ev.ACCOUNT_CREATED, request_only=True, summary="A referred sign-up", value=_example_event(
        ev.ACCOUNT_CREATED, email="dana@example.com", referral_code="24ezuu04", ip="203.0.113.7")),
    OpenApiExample(ev.CREDITS_PURCHASED, request_only=True, summary="A credit purchase", value=_example_event(
        ev.CREDITS_PURCHASED, amount="50.00", payment_fingerprint="card_fp_9d2c")),
    OpenApiExample(ev.PLAN_PURCHASED, request_only=True, summary="A plan purchase", value=_example_event(
        ev.PLAN_PURCHASED, amount="29.00", plan="pro")),
    OpenApiExample(ev.USAGE_CHARGED, request_only=True, summary="A usage charge on a template",
                   value=_example_event(ev.USAGE_CHARGED, amount="0.54", product="serverless",
                                        template="comfy", runtime_seconds=3600)),
    OpenApiExample(ev.CREDITS_REDEEMED, request_only=True, summary="Portal credits spent", value=_example_event(
        ev.CREDITS_REDEEMED, amount="2.50")),
    OpenApiExample(ev.PAYMENT_REFUNDED, request_only=True, summary="A refund of a charge", value=_example_event(
        ev.PAYMENT_REFUNDED, amount="10.00", refunds="evt-usage-charged-1")),
    OpenApiExample(ev.TEMPLATE_PUBLISHED, request_only=True, summary="A published template", value=_example_event(
        ev.TEMPLATE_PUBLISHED, template="comfy", name="ComfyUI")),
    OpenApiExample("batch", request_only=True, summary="A batch", value={"events": [
        _example_event(ev.ACCOUNT_CREATED, id="acc-42", email="dana@example.com"),
        _example_event(ev.USAGE_CHARGED, id="chg-9001", amount="20.00", product="pods")]}),
]


class ApiAutoSchema(AutoSchema):
    """The API reads every body as JSON whatever its Content-Type (`JsonBodyParser` is `*/*`);
    the schema documents what clients should send: `application/json`."""

    def map_parsers(self):
        return ["application/json" if media == "*/*" else media for media in super().map_parsers()]
