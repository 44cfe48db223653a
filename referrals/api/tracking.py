"""Clicks on the operator's site through the API: the tracking script's public call
(`POST /api/v1/track/click`, CORS limited to REFERRAL["TRACKING_ORIGINS"]) and the server-side
click call (`POST /api/v1/clicks`, scope `events:write`). Both record through `referrals.attribution.tracking`."""
import logging
import time

from django.conf import settings
from django.db import DatabaseError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from referrals_site.client_ip import client_ip

from ..attribution import tracking
from ..attribution.middleware import hash_ip
from .auth import CanWriteEvents, counters
from .base import ApiView, JsonBodyParser, StrictInput, batch_items
from .errors import error_body, flatten
from .schema import ERROR_TEXT, ErrorDetailSerializer, ErrorSerializer, error_responses

log = logging.getLogger(__name__)

MAX_BATCH = 1000
PREFLIGHT_MAX_AGE = 24 * 3600
CORS_HEADERS_ALLOWED = {"content-type"}


# --------------------------------------------------------------------------- shapes


class TrackClickInput(StrictInput):
    code = serializers.CharField(max_length=64, allow_blank=True,
                                 help_text="The referral code from the page's `?ref=` parameter. A malformed, "
                                           "unknown or disabled one answers `click_id: null`.")
    template = serializers.CharField(max_length=120, required=False, allow_blank=True,
                                     help_text="The template of a template link; an unknown one is left out.")
    url = serializers.CharField(max_length=2048, required=False, allow_blank=True,
                                help_text="The page the visitor landed on; kept without its query string.")
    referrer = serializers.CharField(max_length=2048, required=False, allow_blank=True,
                                     help_text="`document.referrer` of that page (accepted, not stored).")
    visitor = serializers.RegexField(r"^[0-9a-f]{32}$", required=False,
                                     help_text="The script's first-party visitor id (32 hex digits): repeat "
                                               "clicks of one visitor count once a day as unique.")


class ServerClickInput(StrictInput):
    code = serializers.CharField(max_length=64, help_text="The referral code of the link the visitor followed.")
    template = serializers.CharField(max_length=120, required=False, allow_blank=True,
                                     help_text="The template of a template link; an unknown one is left out.")
    url = serializers.CharField(max_length=2048, required=False, allow_blank=True,
                                help_text="The page the visitor landed on; kept without its query string.")
    referrer = serializers.CharField(max_length=2048, required=False, allow_blank=True,
                                     help_text="The HTTP referrer of that visit (accepted, not stored).")
    ip = serializers.IPAddressField(required=False, help_text="The visitor's IP address: kept as a keyed hash, "
                                                              "and the per-IP click limit applies to it.")
    user_agent = serializers.CharField(max_length=1000, required=False, allow_blank=True,
                                       help_text="The visitor's User-Agent: crawlers are not counted.")
    visitor = serializers.CharField(max_length=200, required=False,
                                    help_text="Your id of the visitor (session, cookie): repeat clicks count "
                                              "once a day as unique. Kept only as a keyed hash.")


class TrackClickOutput(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[tracking.Outcome.RECORDED, tracking.Outcome.UNKNOWN_CODE, tracking.Outcome.CRAWLER],
        help_text="`recorded`: the click was counted; `unknown_code`: malformed, unknown or disabled code, "
                  "nothing counted; `crawler`: the User-Agent is a crawler or link preview, nothing counted.")
    click_id = serializers.UUIDField(allow_null=True, help_text="The click's id, to send as `click_id` in "
                                                                "`account.created`; null when nothing was counted.")
    code = serializers.CharField(allow_null=True, help_text="The referral code (lower case), or null.")
    expires_at = serializers.DateTimeField(allow_null=True,
                                           help_text="The end of the click's attribution window, or null.")


class ClickResultSerializer(TrackClickOutput):
    status = serializers.ChoiceField(
        choices=[tracking.Outcome.RECORDED, tracking.Outcome.UNKNOWN_CODE, tracking.Outcome.CRAWLER,
                 tracking.Outcome.RATE_LIMITED, "rejected"],
        help_text="`recorded`: counted; `unknown_code`, `crawler`, `rate_limited` (the visitor's IP is past "
                  "its clicks per minute): not counted; `rejected`: bad input, see `error`.")
    error = ErrorDetailSerializer(required=False, help_text="Why it was rejected (only for `rejected`).")


class ClicksResponseSerializer(serializers.Serializer):
    results = ClickResultSerializer(many=True, help_text="One result per click, in input order.")


class ClickBatchSerializer(serializers.Serializer):
    clicks = ServerClickInput(many=True, help_text=f"Up to {MAX_BATCH} clicks, answered one by one, in order.")


CLICKS_BODY = PolymorphicProxySerializer(
    component_name="ClicksBody", serializers=[ServerClickInput, ClickBatchSerializer], resource_type_field_name=None,
    help_text=f'One click object, or `{{"clicks": [...]}}` with up to {MAX_BATCH} clicks.')


# --------------------------------------------------------------------------- the public call


class FromTrackingOrigin(BasePermission):
    """The browser's `Origin` is one of the operator's configured origins (REFERRAL["TRACKING_ORIGINS"])."""

    def has_permission(self, request, view):
        origin = request.META.get("HTTP_ORIGIN", "")
        if tracking.origin_allowed(origin):
            return True
        shown = origin[:100] if origin else "no Origin header"
        raise exceptions.PermissionDenied(
            f"{shown} is not an origin allowed to record clicks; the portal's staff list the operator's site "
            "in REFERRAL_TRACKING_ORIGINS", code="origin_not_allowed")


class TrackingIpThrottle(BaseThrottle):
    """Calls per client IP and minute (REFERRAL["TRACK_REQUESTS_PER_IP_PER_MINUTE"]), unknown codes included."""

    wait_seconds: float | None = None

    def allow_request(self, request, view) -> bool:
        limit = settings.REFERRAL["TRACK_REQUESTS_PER_IP_PER_MINUTE"]
        if not limit or request.method == "OPTIONS":
            return True
        now = time.time()
        count = counters.incr(f"throttle:track:{hash_ip(client_ip(request))}:{int(now // 60)}", ttl=60)
        if count is None or count <= limit:
            return True
        self.wait_seconds = max(60 - (now % 60), 1)
        return False

    def wait(self) -> float | None:
        return self.wait_seconds


class SmallJsonBodyParser(JsonBodyParser):
    max_bytes = 16 * 1024  # a click is well under 5 KB; nobody needs more on a public endpoint


PUBLIC_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[400]),
    401: OpenApiResponse(ErrorSerializer, description="Never: this call takes no API key."),
    403: OpenApiResponse(ErrorSerializer, description="The request's `Origin` is not one of the operator's "
                                                      "configured origins (`origin_not_allowed`); nothing recorded."),
    405: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[405]),
    413: OpenApiResponse(ErrorSerializer, description="The body is larger than 16 KB."),
    429: OpenApiResponse(ErrorSerializer, description="Too many calls or counted clicks from this IP this minute; "
                                                      "`Retry-After` says when. Nothing recorded."),
    503: OpenApiResponse(ErrorSerializer, description="The click could not be recorded just now; nothing recorded."),
}


class TrackClickView(ApiView):
    authentication_classes = []
    permission_classes = [FromTrackingOrigin]
    throttle_classes = [TrackingIpThrottle]
    parser_classes = [SmallJsonBodyParser]

    @extend_schema(
        operation_id="track_click", tags=["tracking"], auth=[],
        summary="Record a click on the operator's site (the tracking script's call)",
        description="Public (no key). Browsers may call it only from the operator's configured origins "
                    "(CORS, `REFERRAL_TRACKING_ORIGINS`); any other `Origin` gets 403 and nothing is recorded. "
                    "Crawlers are not counted; calls and counted clicks are limited per IP and minute (429). "
                    "An unknown, malformed or disabled code answers 200 with `click_id: null`.",
        request=TrackClickInput, responses={200: TrackClickOutput, **PUBLIC_ERRORS},
        examples=[OpenApiExample("click", request_only=True, value={
            "code": "5t99c9je", "url": "https://operator.example/pricing?ref=5t99c9je",
            "referrer": "https://news.example/", "visitor": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}),
            OpenApiExample("recorded", response_only=True, value={
                "status": "recorded", "click_id": "6b1f3c2e-93a4-4d6e-8f0a-2c5d7e9b1a40", "code": "5t99c9je",
                "expires_at": "2026-12-31T10:00:00Z"}),
            OpenApiExample("unknown code", response_only=True, value={
                "status": "unknown_code", "click_id": None, "code": None, "expires_at": None})],
    )
    def post(self, request):
        data = _valid(TrackClickInput, request.data)
        ip, user_agent = client_ip(request), request.META.get("HTTP_USER_AGENT", "")
        try:
            tracked = tracking.track_click(
                code=data["code"], template=data.get("template", ""), ip=ip, user_agent=user_agent,
                visitor_id=tracking.visitor_for(given=data.get("visitor", ""), ip=ip, user_agent=user_agent),
                page=tracking.page_of(data.get("url", "")),
            )
        except DatabaseError:
            log.exception("could not record a tracked click")
            return Response(error_body("unavailable", "the click could not be recorded just now; try again"),
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        if tracked.outcome == tracking.Outcome.RATE_LIMITED:
            return Response(error_body("rate_limited", "too many clicks from this IP address this minute"),
                            status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": "60"})
        return Response(tracked.as_dict())

    @extend_schema(exclude=True)
    def options(self, request, *args, **kwargs):
        # The CORS preflight; the origin was checked by the permission (403 without CORS headers).
        response = Response(status=status.HTTP_204_NO_CONTENT)
        requested = {h.strip().lower() for h in request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").split(",")
                     if h.strip()}
        response["Access-Control-Allow-Methods"] = "POST"
        response["Access-Control-Allow-Headers"] = ", ".join(sorted(requested & CORS_HEADERS_ALLOWED)) or "Content-Type"
        response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        origin = request.META.get("HTTP_ORIGIN", "")
        if tracking.origin_allowed(origin):
            # The script reads every answer (errors too); no cookies are sent, so no credentials.
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = "Retry-After"
        response["Vary"] = "Origin"
        response["Cache-Control"] = "no-store"
        return response


def _valid(serializer_class, data) -> dict:
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"body": "must be a JSON object"})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --------------------------------------------------------------------------- server-side clicks


class ClicksView(ApiView):
    permission_classes = [CanWriteEvents]

    @extend_schema(
        operation_id="clicks_record", tags=["tracking"], summary=f"Record one click or a batch of up to {MAX_BATCH}",
        description="For operators that see the referral link's visit on their own servers. Scope `events:write`. "
                    "Each click is answered on its own, in input order, like events: `recorded` with its "
                    "`click_id` (send it in `account.created`), `unknown_code`, `crawler` or `rate_limited` "
                    "(not counted), or `rejected` with the error naming each bad field.",
        request=CLICKS_BODY, responses={200: ClicksResponseSerializer, **error_responses(400, 413)},
        examples=[OpenApiExample("one click", request_only=True, value={
            "code": "5t99c9je", "url": "https://operator.example/?ref=5t99c9je", "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "visitor": "session-8c1d"}),
            OpenApiExample("batch", request_only=True, value={"clicks": [
                {"code": "5t99c9je", "ip": "203.0.113.7", "visitor": "session-8c1d"},
                {"code": "24ezuu04", "template": "comfy", "ip": "198.51.100.4", "visitor": "session-77aa"}]})],
    )
    def post(self, request):
        return Response({"results": [_record_server_click(item) for item in _clicks_from(request.data)]})


def _clicks_from(body) -> list:
    return batch_items(body, noun="click", marker="code", limit=MAX_BATCH)


def _record_server_click(item) -> dict:
    if not isinstance(item, dict):
        return _rejected({"body": "must be a click object"})
    serializer = ServerClickInput(data=item)
    if not serializer.is_valid():
        return _rejected(flatten(serializer.errors))
    data = serializer.validated_data
    ip, user_agent = data.get("ip", ""), data.get("user_agent", "")
    tracked = tracking.track_click(
        code=data["code"], template=data.get("template", ""), ip=ip, user_agent=user_agent,
        visitor_id=tracking.visitor_for(given=data.get("visitor", ""), ip=ip, user_agent=user_agent),
        page=tracking.page_of(data.get("url", "")),
        # Without the visitor's IP the caller's own address is all we have: one operator server
        # must not be limited as if it were one visitor. Its key's rate limit still applies.
        limit_ip=bool(ip),
    )
    return tracked.as_dict()


def _rejected(fields: dict) -> dict:
    message = "; ".join(f"{name}: {text}" for name, text in fields.items()) or "invalid input"
    return {"status": "rejected", "click_id": None, "code": None, "expires_at": None,
            "error": error_body("invalid", message, fields)["error"]}
