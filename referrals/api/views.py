"""The integration API of shared/API.md: thin views that parse input, call a service or a
selector, and render. Errors are shaped by `referrals.api.errors`."""
import logging
from datetime import UTC

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from ledger.money import format_row

from .. import selectors
from ..engine import ingestion, services
from ..engine.jobs import JOBS, UnknownJob, future_run_problem, run_jobs
from ..models import Application, Event, Referral, Track
from . import reads
from .auth import CanRead, CanWriteEvents, IsStaffKey
from .base import ApiView, CentsField, ExactMoneyField, NewestFirstPagination, StrictInput, batch_items, db_int
from .keys import api_key_audit
from .schema import (
    CURSOR_PARAMETER,
    EVENT_EXAMPLES,
    EVENTS_BODY,
    EventsResponseSerializer,
    error_responses,
    paginated,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1000


# --------------------------------------------------------------------------- events


class EventsView(ApiView):
    permission_classes = [CanWriteEvents]
    text_checked_per_item = True  # a hostile event is rejected on its own (events.validate_event)

    @extend_schema(
        operation_id="events_push", tags=["events"], summary="Push one event or a batch of up to 1000",
        description="Each event is validated and answered on its own, in input order: `accepted`, `duplicate` "
                    "(same `id`, same content) or `rejected` (with the error naming each bad field). Scope "
                    "`events:write`. Money effects of accepted events are visible to GET endpoints within a "
                    "second, and always after `POST /api/v1/jobs/run`.",
        request=EVENTS_BODY, examples=EVENT_EXAMPLES,
        responses={200: EventsResponseSerializer, **error_responses(400, 413)},
    )
    def post(self, request):
        events = _events_from(request.data)
        return Response({"results": [result.as_dict() for result in
                                     ingestion.ingest_batch(events, source=Event.Source.API)]})


def _events_from(body) -> list:
    """The events of a body: one event object or {"events": [...]}; anything else is a 400."""
    return batch_items(body, noun="event", marker="type", limit=MAX_BATCH)


# --------------------------------------------------------------------------- reading


class BalancesOutput(serializers.Serializer):
    credits = CentsField(help_text="Spendable platform credit (bonuses, credit-type commissions), whole cents.")
    cash_available = CentsField(help_text="What a payout could take now, after ratios and rules, whole cents.")
    pending = CentsField(help_text="Earned but held (gates, hold periods, fraud review), whole cents.")


class AccountOutput(serializers.Serializer):
    account = serializers.CharField(help_text="The operator's account id.")
    referral_code = serializers.CharField(help_text="The account's own referral code (8 characters).")
    referral_link = serializers.CharField(help_text="The account's referral link (`<site>/?ref=<code>`).")
    referred_by = serializers.CharField(allow_null=True, help_text="The referrer's code, or null.")
    track = serializers.ChoiceField(choices=Track.values, help_text="The commission track.")
    balances = BalancesOutput(help_text="Balances derived from the ledger.")


ACCOUNT_PARAMETER = OpenApiParameter("account", str, OpenApiParameter.PATH, description="The operator's account id.")


def _account_response(account) -> Response:
    return Response(AccountOutput(reads.account_summary(account)).data)


class AccountView(ApiView):
    permission_classes = [CanRead]

    @extend_schema(operation_id="account_read", tags=["reading"], summary="An account with its balances",
                   parameters=[ACCOUNT_PARAMETER], responses={200: AccountOutput, **error_responses()})
    def get(self, request, account):
        return _account_response(reads.account_for_key(request.auth, account))


class AccountStatsView(ApiView):
    permission_classes = [CanRead]

    @extend_schema_serializer(component_name="AccountStatsOutput")
    class OutputSerializer(serializers.Serializer):
        total_referrals = serializers.IntegerField(help_text="Accounts that signed up through the account's links.")
        conversions = serializers.IntegerField(help_text="Referred accounts with at least one purchase or spend.")
        conversion_rate = serializers.DecimalField(max_digits=5, decimal_places=4,
                                                   help_text="conversions / total_referrals, 0 to 1, 4 decimals.")
        total_clicks = serializers.IntegerField(help_text="Every visit through the account's links.")
        unique_clicks = serializers.IntegerField(help_text="Clicks counted once per visitor per day.")
        pending_referrals = serializers.IntegerField(help_text="Referred accounts with no purchase yet.")
        total_earnings = ExactMoneyField(help_text="All-time referral earnings, exact (sub-cent digits kept).")

    @extend_schema(operation_id="account_stats", tags=["reading"], summary="Referral statistics of an account",
                   parameters=[ACCOUNT_PARAMETER], responses={200: OutputSerializer, **error_responses()})
    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        return Response(self.OutputSerializer(selectors.referral_stats(account)).data)


class AccountEarningsView(ApiView):
    permission_classes = [CanRead]

    @extend_schema_serializer(component_name="AccountEarningsOutput")
    class OutputSerializer(serializers.Serializer):
        program = serializers.CharField(help_text="The programme's key, e.g. `runpod-revenue-share`.")
        name = serializers.CharField(help_text="The programme's name.")
        # API.md: sub-cent precision is allowed in `earned`; when it carries some, every figure of
        # the row is written with as many decimals (SPEC "Figures agree"), never a mix.
        earned = ExactMoneyField(help_text="All-time commission and bonuses, exact (sub-cent digits kept).")
        pending = ExactMoneyField(help_text="Earned but still held; same decimals as `earned`.")
        available = ExactMoneyField(help_text="earned - pending - paid - reserved; same decimals as `earned`.")
        paid = ExactMoneyField(help_text="Paid out by settled payouts (less reversed ones); same decimals.")
        reserved = ExactMoneyField(help_text="Held by payout requests in progress; same decimals as `earned`.")

        def to_representation(self, instance):
            return {"program": instance["program"], "name": instance["name"],
                    **format_row({name: instance[name] for name in ("earned", "pending", "available", "paid",
                                                                     "reserved")})}

    @extend_schema(operation_id="account_earnings", tags=["reading"], summary="Earnings per programme",
                   parameters=[ACCOUNT_PARAMETER],
                   responses={200: inline_serializer("EarningsOutput", {
                       "programs": OutputSerializer(many=True, help_text="One row per programme the account earned in.")
                   }), **error_responses()})
    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        rows = selectors.earnings_by_program(account)
        return Response({"programs": self.OutputSerializer(rows, many=True).data})


class AccountReferralsView(ApiView):
    permission_classes = [CanRead]

    @extend_schema_serializer(component_name="AccountReferralsFilter")
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Referral.Status.values, required=False)

    @extend_schema_serializer(component_name="AccountReferralsOutput")
    class OutputSerializer(serializers.Serializer):
        account = serializers.CharField(source="referred.external_id", help_text="The referred account's id.")
        status = serializers.ChoiceField(choices=Referral.Status.values,
                                         help_text="pending (no purchase yet), converted or ineligible.")
        ineligible_reason = serializers.CharField(help_text="Why it is ineligible (self-referral signals), or empty.")
        spend = ExactMoneyField(help_text="The referred account's net usage spend, exact.")
        purchases = ExactMoneyField(help_text="The referred account's net purchases, exact.")
        signed_up_at = serializers.DateTimeField(source="referred.signed_up_at", help_text="When it signed up.")
        converted_at = serializers.DateTimeField(allow_null=True, help_text="Its first purchase or spend, or null.")

    @extend_schema(operation_id="account_referrals", tags=["reading"], summary="Referred accounts, newest first",
                   parameters=[ACCOUNT_PARAMETER, CURSOR_PARAMETER, OpenApiParameter(
                       "status", str, enum=Referral.Status.values, description="Only referrals in this status.")],
                   responses={200: paginated("PaginatedReferrals", OutputSerializer()),
                              **error_responses(400)})
    def get(self, request, account):
        account = reads.account_for_key(request.auth, account)
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(reads.referrals_of(account, **filters.validated_data), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class TemplateView(ApiView):
    permission_classes = [CanRead]

    @extend_schema_serializer(component_name="TemplateOutput")
    class OutputSerializer(serializers.Serializer):
        template = serializers.CharField(help_text="The template's id.")
        name = serializers.CharField(help_text="The template's display name (may be empty).")
        creator = serializers.CharField(help_text="The creator's account id.")
        runtime_seconds = serializers.IntegerField(help_text="Cumulative runtime of instances launched from it.")
        qualified = serializers.BooleanField(help_text="Whether it met its runtime gate (earnings released).")
        earned = ExactMoneyField(help_text="What its creator earned from it, exact.")

    @extend_schema(operation_id="template_read", tags=["reading"], summary="A template and its creator's earnings",
                   parameters=[OpenApiParameter("template", str, OpenApiParameter.PATH,
                                                description="The template's id.")],
                   responses={200: OutputSerializer, **error_responses()})
    def get(self, request, template):
        template = reads.template_for_key(request.auth, template)
        return Response(self.OutputSerializer(reads.template_summary(template)).data)


# --------------------------------------------------------------------------- staff actions


class ApplicationOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="The application's id.")
    program = serializers.CharField(source="program.key", help_text="The gated programme's key.")
    account = serializers.CharField(source="account.external_id", help_text="The referrer's account id.")
    status = serializers.ChoiceField(choices=Application.Status.values, help_text="open, approved or rejected.")
    referrals_at_open = serializers.IntegerField(help_text="Eligible referrals when the gate was met.")
    spend_at_open = ExactMoneyField(help_text="Their spend when the gate was met, exact.")
    opened_at = serializers.DateTimeField(help_text="When the periodic job opened it.")
    decided_at = serializers.DateTimeField(allow_null=True, help_text="When staff decided, or null.")
    reason = serializers.CharField(help_text="The decision's reason (may be empty).")


APPLICATION_PARAMETER = OpenApiParameter("application_id", int, OpenApiParameter.PATH,
                                         description="The application's id.")


class ApplicationListView(ApiView):
    permission_classes = [IsStaffKey]

    @extend_schema_serializer(component_name="ApplicationListFilter")
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Application.Status.values, required=False)

    @extend_schema(operation_id="applications_list", tags=["staff"], summary="Programme applications, newest first",
                   parameters=[CURSOR_PARAMETER, OpenApiParameter(
                       "status", str, enum=Application.Status.values, description="Only applications in this status.")],
                   responses={200: paginated("PaginatedApplications", ApplicationOutput()), **error_responses(400)})
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

    @extend_schema_serializer(component_name="ApplicationApproveInput")
    class InputSerializer(StrictInput):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="",
                                       help_text="Why it is approved (optional).")

    @extend_schema(operation_id="application_approve", tags=["staff"], summary="Approve an open application",
                   parameters=[APPLICATION_PARAMETER], request=InputSerializer,
                   responses={200: ApplicationOutput, **error_responses(400, 409)})
    def post(self, request, application_id):
        data = _valid(self.InputSerializer, request.data)
        application = _application(application_id)
        with transaction.atomic():
            application = services.application_approve(application=application, actor=None, reason=data["reason"])
            api_key_audit(key=request.auth, action="application.approve", obj=application, reason=data["reason"])
        return Response(ApplicationOutput(application).data)


class ApplicationRejectView(ApiView):
    permission_classes = [IsStaffKey]

    @extend_schema_serializer(component_name="ApplicationRejectInput")
    class InputSerializer(StrictInput):
        reason = serializers.CharField(max_length=2000, help_text="Why it is rejected (required).")

    @extend_schema(operation_id="application_reject", tags=["staff"], summary="Reject an open application",
                   parameters=[APPLICATION_PARAMETER], request=InputSerializer,
                   responses={200: ApplicationOutput, **error_responses(400, 409)})
    def post(self, request, application_id):
        data = _valid(self.InputSerializer, request.data)
        application = _application(application_id)
        with transaction.atomic():
            application = services.application_reject(application=application, actor=None, reason=data["reason"])
            api_key_audit(key=request.auth, action="application.reject", obj=application, reason=data["reason"])
        return Response(ApplicationOutput(application).data)


class AccountTrackView(ApiView):
    permission_classes = [IsStaffKey]

    @extend_schema_serializer(component_name="AccountTrackInput")
    class InputSerializer(StrictInput):
        track = serializers.ChoiceField(choices=Track.values, help_text="The new commission track.")

    @extend_schema(operation_id="account_track", tags=["staff"], summary="Switch an account's commission track",
                   parameters=[ACCOUNT_PARAMETER], request=InputSerializer,
                   responses={200: AccountOutput, **error_responses(400, 409)})
    def post(self, request, account):
        data = _valid(self.InputSerializer, request.data)
        account = reads.account_for_key(request.auth, account)
        with transaction.atomic():
            account = services.account_change_track(account=account, track=data["track"], source=Event.Source.STAFF)
            api_key_audit(key=request.auth, action="account.track", obj=account)
        return _account_response(account)


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(JOBS)}, "minItems": 1})
class JobNamesField(serializers.JSONField):
    """A JSON list of job names, checked by `validate_jobs` so every wrong shape names `jobs`."""


class JobsRunView(ApiView):
    permission_classes = [IsStaffKey]

    @extend_schema_serializer(component_name="JobsRunInput")
    class InputSerializer(StrictInput):
        at = serializers.CharField(required=False, help_text="Run as of this ISO 8601 date-time (default: now); "
                                   "not later than now plus REFERRAL_MAX_CLOCK_SKEW_SECONDS.")
        jobs = JobNamesField(required=False, help_text="Job names to run (default: all).")

        def validate_at(self, value):
            try:
                when = parse_datetime(value.strip())
                if when is not None and when.tzinfo is not None:
                    when.astimezone(UTC)  # years at the edge of the calendar overflow here, not in the job
                    if problem := future_run_problem(when):
                        raise serializers.ValidationError(problem)
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

    @extend_schema_serializer(component_name="JobsRunOutput")
    class OutputSerializer(serializers.Serializer):
        at = serializers.DateTimeField(help_text="The time the jobs ran as of.")
        applied_events = serializers.IntegerField(
            help_text="Accepted events whose money effects were still being applied, applied first.")
        results = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()),
                                        help_text="What each job did: counts by job name.")

    @extend_schema(operation_id="jobs_run", tags=["staff"], summary="Run the periodic jobs now",
                   description="First applies every accepted event not applied yet, then runs the jobs "
                               "synchronously as of `at`.",
                   request=InputSerializer, responses={200: OutputSerializer, **error_responses(400)})
    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        at = data.get("at") or timezone.now()
        applied = ingestion.apply_pending()
        try:
            results = run_jobs(at=at, names=data.get("jobs"))
        except UnknownJob as exc:
            raise exceptions.ValidationError({"jobs": str(exc)})
        return Response(self.OutputSerializer({"at": at, "applied_events": applied, "results": results}).data)


# --------------------------------------------------------------------------- everything else


class NotFoundView(ApiView):
    """Any other path under /api/v1/: a JSON 404 rather than Django's HTML page."""

    authentication_classes = []
    throttle_classes = []
    schema = None  # not an endpoint

    def initial(self, request, *args, **kwargs):
        raise exceptions.NotFound("no such endpoint; see the API reference (docs/api.md)")


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
