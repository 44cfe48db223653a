"""The integration API of shared/API.md: thin views that parse input, call a service or a
selector, and render. Errors are shaped by `referrals.api.errors`."""
import logging
from datetime import UTC

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from referrals import selectors, services
from referrals.jobs import JOBS, UnknownJob, run_jobs
from referrals.models import Application, Event, Referral, Track

from . import reads
from .auth import CanRead, CanWriteEvents, IsStaffKey
from .base import ApiView, CentsField, ExactMoneyField, NewestFirstPagination, StrictInput, db_int
from .keys import api_key_audit

log = logging.getLogger(__name__)

MAX_BATCH = 1000


# --------------------------------------------------------------------------- events


class EventsView(ApiView):
    permission_classes = [CanWriteEvents]

    def post(self, request):
        events = _events_from(request.data)
        return Response({"results": [_ingest(raw) for raw in events]})


def _events_from(body) -> list:
    """The events of a body: one event object or {"events": [...]}; anything else is a 400."""
    shape = 'send one event object, or {"events": [...]}'
    if not isinstance(body, dict):
        raise exceptions.ValidationError({"body": f"must be a JSON object: {shape}"})
    if "events" in body:
        extra = {name: f"is not a field of a batch ({shape})" for name in body if name != "events"}
        if extra:
            raise exceptions.ValidationError(extra)
        events = body["events"]
        if not isinstance(events, list):
            raise exceptions.ValidationError({"events": "must be a list of event objects"})
        if len(events) > MAX_BATCH:
            raise exceptions.ValidationError(
                {"events": f"at most {MAX_BATCH} events per batch (got {len(events)}); split the batch"})
        return events
    if "type" not in body:
        raise exceptions.ValidationError({"body": f"is neither an event (no \"type\") nor a batch: {shape}"})
    return [body]


def _ingest(raw) -> dict:
    try:
        return services.ingest_event(raw, source=Event.Source.API).as_dict()
    except Exception:
        # One event that trips a bug must not fail the whole batch: the events before it are
        # already committed, and a 500 would leave the sender unsure which ones were.
        log.exception("event could not be ingested")
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        return {"id": raw_id if isinstance(raw_id, str) else "", "status": "rejected",
                "error": {"code": "internal_error", "fields": {},
                          "message": "this event could not be processed; nothing of it was applied"}}


# --------------------------------------------------------------------------- reading


class AccountOutput(serializers.Serializer):
    class BalancesOutput(serializers.Serializer):
        credits = CentsField()
        cash_available = CentsField()
        pending = CentsField()

    account = serializers.CharField()
    referral_code = serializers.CharField()
    referral_link = serializers.CharField()
    referred_by = serializers.CharField(allow_null=True)
    track = serializers.CharField()
    balances = BalancesOutput()


def _account_response(account) -> Response:
    return Response(AccountOutput(reads.account_summary(account)).data)


class AccountView(ApiView):
    permission_classes = [CanRead]

    def get(self, request, account):
        return _account_response(reads.account_for_key(request.auth, account))


class AccountStatsView(ApiView):
    permission_classes = [CanRead]

    class OutputSerializer(serializers.Serializer):
        total_referrals = serializers.IntegerField()
        conversions = serializers.IntegerField()
        conversion_rate = serializers.DecimalField(max_digits=5, decimal_places=4)
        total_clicks = serializers.IntegerField()
        unique_clicks = serializers.IntegerField()
        pending_referrals = serializers.IntegerField()
        total_earnings = ExactMoneyField()

    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        return Response(self.OutputSerializer(selectors.referral_stats(account)).data)


class AccountEarningsView(ApiView):
    permission_classes = [CanRead]

    class OutputSerializer(serializers.Serializer):
        program = serializers.CharField()
        name = serializers.CharField()
        earned = ExactMoneyField()  # API.md: sub-cent precision is allowed here
        pending = CentsField()
        available = CentsField()
        paid = CentsField()

    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        rows = selectors.earnings_by_program(account)
        return Response({"programs": self.OutputSerializer(rows, many=True).data})


class AccountReferralsView(ApiView):
    permission_classes = [CanRead]

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Referral.Status.values, required=False)

    class OutputSerializer(serializers.Serializer):
        account = serializers.CharField(source="referred.external_id")
        status = serializers.CharField()
        ineligible_reason = serializers.CharField()
        spend = ExactMoneyField()
        purchases = ExactMoneyField()
        signed_up_at = serializers.DateTimeField(source="referred.signed_up_at")
        converted_at = serializers.DateTimeField()

    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(reads.referrals_of(account, **filters.validated_data), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class TemplateView(ApiView):
    permission_classes = [CanRead]

    class OutputSerializer(serializers.Serializer):
        template = serializers.CharField()
        name = serializers.CharField()
        creator = serializers.CharField()
        runtime_seconds = serializers.IntegerField()
        qualified = serializers.BooleanField()
        earned = ExactMoneyField()

    def get(self, request, template):
        template = reads.template_for_key(request.auth, template)
        return Response(self.OutputSerializer(reads.template_summary(template)).data)


# --------------------------------------------------------------------------- staff actions


class ApplicationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    program = serializers.CharField(source="program.key")
    account = serializers.CharField(source="account.external_id")
    status = serializers.CharField()
    referrals_at_open = serializers.IntegerField()
    spend_at_open = ExactMoneyField()
    opened_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField()
    reason = serializers.CharField()


class ApplicationListView(ApiView):
    permission_classes = [IsStaffKey]

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Application.Status.values, required=False)

    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(reads.applications(**filters.validated_data), request, view=self)
        return paginator.get_paginated_response(ApplicationOutput(page, many=True).data)


def _application(application_id: int) -> Application:
    application = Application.objects.select_related("program", "account").filter(pk=db_int(application_id)).first()
    if application is None:
        raise exceptions.NotFound(f"no application {application_id}")
    return application


class ApplicationApproveView(ApiView):
    permission_classes = [IsStaffKey]

    class InputSerializer(StrictInput):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")

    def post(self, request, application_id):
        data = _valid(self.InputSerializer, request.data)
        application = _application(application_id)
        with transaction.atomic():
            application = services.application_approve(application=application, actor=None, reason=data["reason"])
            api_key_audit(key=request.auth, action="application.approve", obj=application, reason=data["reason"])
        return Response(ApplicationOutput(application).data)


class ApplicationRejectView(ApiView):
    permission_classes = [IsStaffKey]

    class InputSerializer(StrictInput):
        reason = serializers.CharField(max_length=2000)

    def post(self, request, application_id):
        data = _valid(self.InputSerializer, request.data)
        application = _application(application_id)
        with transaction.atomic():
            application = services.application_reject(application=application, actor=None, reason=data["reason"])
            api_key_audit(key=request.auth, action="application.reject", obj=application, reason=data["reason"])
        return Response(ApplicationOutput(application).data)


class AccountTrackView(ApiView):
    permission_classes = [IsStaffKey]

    class InputSerializer(StrictInput):
        track = serializers.ChoiceField(choices=Track.values)

    def post(self, request, account):
        data = _valid(self.InputSerializer, request.data)
        account = reads.account_for_key(request.auth, account)
        with transaction.atomic():
            account = services.account_change_track(account=account, track=data["track"], source=Event.Source.STAFF)
            api_key_audit(key=request.auth, action="account.track", obj=account)
        return _account_response(account)


class JobsRunView(ApiView):
    permission_classes = [IsStaffKey]

    class InputSerializer(StrictInput):
        at = serializers.CharField(required=False)
        jobs = serializers.JSONField(required=False)

        def validate_at(self, value):
            try:
                when = parse_datetime(value.strip())
                if when is not None and when.tzinfo is not None:
                    when.astimezone(UTC)  # years at the edge of the calendar overflow here, not in the job
                    return when
            except (ValueError, OverflowError):
                pass
            raise serializers.ValidationError(
                "must be an ISO 8601 date-time with a time zone, e.g. 2026-01-31T00:00:00Z")

        def validate_jobs(self, value):
            if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
                raise serializers.ValidationError(
                    f"must be a non-empty list of job names (omit it to run all): {', '.join(JOBS)}")
            unknown = [name for name in value if name not in JOBS]
            if unknown:
                raise serializers.ValidationError(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(JOBS)}")
            return list(dict.fromkeys(value))

    class OutputSerializer(serializers.Serializer):
        at = serializers.DateTimeField()
        results = serializers.DictField()

    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        at = data.get("at") or timezone.now()
        try:
            results = run_jobs(at=at, names=data.get("jobs"))
        except UnknownJob as exc:
            raise exceptions.ValidationError({"jobs": str(exc)})
        return Response(self.OutputSerializer({"at": at, "results": results}).data)


# --------------------------------------------------------------------------- everything else


class NotFoundView(ApiView):
    """Any other path under /api/v1/: a JSON 404 rather than Django's HTML page."""

    authentication_classes = []
    throttle_classes = []

    def initial(self, request, *args, **kwargs):
        raise exceptions.NotFound("no such endpoint; see the API reference (docs/api.md)")


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
