"""The payout endpoints of shared/API.md (scope `staff`): register a method, request a payout,
approve or reject it. Thin views over `payouts.services`; errors in the API's one shape."""
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from referrals.api.auth import IsStaffKey
from referrals.api.base import ApiView, CentsField, StrictInput, db_int
from referrals.api.keys import api_key_audit
from referrals.api.reads import account_for_key
from referrals.api.schema import error_responses
from referrals.models import Account

from .. import services
from ..models import MethodType, Payout


class MethodOutput(serializers.Serializer):
    account = serializers.CharField(source="account.external_id", help_text="The operator's account id.")
    type = serializers.CharField(help_text="The provider: `stripe`, `paypal` or `wise`.")
    masked = serializers.CharField(help_text="Only the last characters of the e-mail, recipient or account id.")
    ready = serializers.BooleanField(help_text="Whether payouts can be sent to it now.")
    updated_at = serializers.DateTimeField(help_text="When the method was last registered or changed.")


class PayoutOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="The payout's id, for `GET /api/v1/payouts/{id}` and its actions.")
    account = serializers.CharField(source="account.external_id", help_text="The operator's account id.")
    amount = CentsField(help_text="The amount paid out, whole cents.")
    method = serializers.CharField(source="method_type", help_text="The provider: `stripe`, `paypal` or `wise`.")
    destination = serializers.CharField(source="method.masked",
                                        help_text="Where it goes, masked like the method's `masked`.")
    status = serializers.CharField(
        help_text="`requested`, `approved`, `processing`, `paid`, `failed`, `rejected` or `cancelled`; the amount "
                  "stays reserved while `requested`, `approved` or `processing`.")
    attempt = serializers.IntegerField(help_text="1, plus one per retry after a definitive provider failure.")
    provider_reference = serializers.CharField(help_text="The provider's id of the transfer, once sent; else empty.")
    failure_reason = serializers.CharField(help_text="Why the provider failed it; else empty.")
    requested_at = serializers.DateTimeField(help_text="When it was requested.")
    approved_at = serializers.DateTimeField(help_text="When staff approved it, or null.")
    finished_at = serializers.DateTimeField(help_text="When it was paid, failed, rejected or cancelled, or null.")
    awaiting_second_approval = serializers.BooleanField(
        help_text="Above PAYOUT_SECOND_APPROVAL_ABOVE: one approval is recorded, a different approver must give "
                  "the second.")


def _invalid(exc: services.PayoutInvalid):
    return exceptions.ValidationError(exc.fields)


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class PayoutMethodsView(ApiView):
    permission_classes = [IsStaffKey]

    class PayoutMethodInput(StrictInput):
        type = serializers.ChoiceField(choices=MethodType.values, help_text="The provider of the method.")
        email = serializers.CharField(required=False, max_length=254, default="",
                                      help_text="The PayPal account's e-mail; required for `paypal`.")
        recipient = serializers.CharField(required=False, max_length=40, default="",
                                          help_text="The Wise recipient account id; required for `wise`.")
        connected_account = serializers.CharField(
            required=False, max_length=80, default="",
            help_text="The Stripe connected account id (`acct_...`); required for `stripe`.")

        def validate(self, data):
            needed = {"paypal": "email", "wise": "recipient", "stripe": "connected_account"}[data["type"]]
            if not data.get(needed):
                raise serializers.ValidationError({needed: f"is required for a {data['type']} method"})
            return data

    @extend_schema(
        operation_id="payout_methods_set", tags=["payouts"], summary="Register an account's payout method",
        description="For integrations that onboard their users themselves. `type` `paypal` needs `email`, `wise` "
                    "needs `recipient` (the Wise recipient account id), `stripe` needs `connected_account` "
                    "(acct_...). One method per type: registering again replaces it. The answer shows the method "
                    "masked. Scope `staff`.",
        request=PayoutMethodInput, responses={201: MethodOutput, **error_responses(400)})
    def post(self, request, account):
        data = _valid(self.PayoutMethodInput, request.data)
        account = account_for_key(request.auth, account)
        try:
            with transaction.atomic():
                method = services.payout_method_set(account=account, source=services.API, **data)
                api_key_audit(key=request.auth, action="payout_method.set", obj=account)
        except services.PayoutInvalid as exc:
            raise _invalid(exc)
        return Response(MethodOutput(method).data, status=status.HTTP_201_CREATED)


class PayoutsView(ApiView):
    permission_classes = [IsStaffKey]

    class PayoutRequestInput(StrictInput):
        account = serializers.CharField(max_length=120, help_text="The operator's account id.")
        # Parsed by the service, which names the problem (not a string, too many decimals, ...).
        amount = serializers.JSONField(help_text="A decimal string with at most 2 decimals, e.g. \"25.00\".")
        method = serializers.CharField(max_length=20,
                                       help_text="The registered method to pay to: `stripe`, `paypal` or `wise`.")

    @extend_schema(
        operation_id="payouts_request", tags=["payouts"], summary="Request a payout",
        description="Reserves `amount` (a decimal string with at most 2 decimals) of the account's cash for a "
                    "payout to its `method` (stripe, paypal or wise). 400 naming the field for an amount below "
                    "the programme minimum or above `cash_available`, no such method set up, or a method the "
                    "programmes do not allow; nothing is reserved then. Scope `staff`.",
        request=PayoutRequestInput, responses={201: PayoutOutput, **error_responses(400)})
    def post(self, request):
        data = _valid(self.PayoutRequestInput, request.data)
        account = Account.objects.filter(external_id=data["account"]).first()
        if account is None:
            raise exceptions.ValidationError({"account": f"unknown account {data['account']!r}"})
        try:
            with transaction.atomic():
                payout = services.payout_request(account=account, amount=data["amount"], method=data["method"],
                                                 source=services.API)
                api_key_audit(key=request.auth, action="payout.request", obj=payout)
        except services.PayoutInvalid as exc:
            raise _invalid(exc)
        return Response(PayoutOutput(payout).data, status=status.HTTP_201_CREATED)


def _payout(payout_id: int) -> Payout:
    payout = Payout.objects.select_related("account", "method").filter(pk=db_int(payout_id)).first()
    if payout is None:
        raise exceptions.NotFound(f"no payout {payout_id}")
    return payout


class PayoutView(ApiView):
    permission_classes = [IsStaffKey]

    @extend_schema(operation_id="payouts_get", tags=["payouts"], summary="One payout",
                   responses={200: PayoutOutput, **error_responses()})
    def get(self, request, payout_id):
        return Response(PayoutOutput(_payout(payout_id)).data)


class PayoutApproveView(ApiView):
    permission_classes = [IsStaffKey]

    class PayoutApproveInput(StrictInput):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="",
                                       help_text="Why it is approved (optional, kept in the audit trail).")

    @extend_schema(operation_id="payouts_approve", tags=["payouts"], summary="Approve a requested payout",
                   description="It is then sent to its provider. 409 unless the payout is `requested`. "
                               "Above PAYOUT_SECOND_APPROVAL_ABOVE a payout needs two approvals from two "
                               "different staff keys or staff members: the first answers 200 with "
                               "`awaiting_second_approval` true, the same key again answers 409. 409 too while the "
                               "account has an open fraud flag (e.g. a payout destination shared with another "
                               "account): staff clear or confirm it first.",
                   request=PayoutApproveInput, responses={200: PayoutOutput, **error_responses(400, 409)})
    def post(self, request, payout_id):
        data = _valid(self.PayoutApproveInput, request.data)
        payout = _payout(payout_id)
        with transaction.atomic():
            payout = services.payout_approve(payout=payout, actor=None, reason=data["reason"], source=services.API,
                                             api_key=request.auth)
            action = "payout.first_approval" if payout.awaiting_second_approval else "payout.approve"
            api_key_audit(key=request.auth, action=action, obj=payout, reason=data["reason"])
        return Response(PayoutOutput(_payout(payout.pk)).data)


class PayoutRejectView(ApiView):
    permission_classes = [IsStaffKey]

    class PayoutRejectInput(StrictInput):
        reason = serializers.CharField(max_length=2000,
                                       help_text="Why it is rejected (required, kept in the audit trail).")

    @extend_schema(operation_id="payouts_reject", tags=["payouts"], summary="Reject a payout (reason required)",
                   description="Its amount goes back to the account's cash. 409 unless `requested` or `approved`.",
                   request=PayoutRejectInput, responses={200: PayoutOutput, **error_responses(400, 409)})
    def post(self, request, payout_id):
        data = _valid(self.PayoutRejectInput, request.data)
        payout = _payout(payout_id)
        try:
            with transaction.atomic():
                payout = services.payout_reject(payout=payout, actor=None, reason=data["reason"],
                                                source=services.API)
                api_key_audit(key=request.auth, action="payout.reject", obj=payout, reason=data["reason"])
        except services.PayoutInvalid as exc:
            raise _invalid(exc)
        return Response(PayoutOutput(_payout(payout.pk)).data)
