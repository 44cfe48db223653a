"""The payouts page (methods, a request form, history) and the Stripe webhook endpoint.

Thin views: parse the form, call one service, render. Errors come back in words on the page."""
import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from referrals.models import Account
from referrals.portal import dashboard as dashboard_reads
from referrals.templatetags.figures import money_text

from . import selectors, services, webhooks
from .forms import PayoutRequestForm, PayPalForm, WiseForm
from .models import MethodType, Payout, StripeWebhook
from .providers import ProviderError

log = logging.getLogger(__name__)


def _account(request) -> Account:
    account = Account.objects.filter(user=request.user).first()
    if account is None:
        raise Http404("this login has no referral account")
    return account


def _render(request, account, *, request_form=None, paypal_form=None, wise_form=None, status=200):
    methods = list(selectors.methods_of(account))
    ready = [m for m in methods if m.ready]
    balances = selectors.account_balances(account)
    history = list(selectors.payouts_of(account)[:50])
    wallet = dashboard_reads.wallet(account, now=timezone.now())
    short_of_minimum = max(wallet.min_payout - balances.cash_available, 0) if wallet.min_payout else 0
    # Why no payout can be requested now, in words (the form is shown only when one can).
    cannot = []
    if not ready:
        cannot.append("You have no payout method set up yet: add PayPal or Wise, or connect Stripe, above.")
    if not balances.cash_available:
        cannot.append("You have no cash to withdraw yet." + (
            f" {money_text(balances.pending)} is still held (see the wallet for why)." if balances.pending else "")
            + ("" if wallet.pays_cash else " Your programmes pay in platform credits, which cannot be withdrawn."))
    elif short_of_minimum:
        cannot.append(f"The minimum payout is {money_text(wallet.min_payout)}: you have "
                      f"{money_text(balances.cash_available)}, {money_text(short_of_minimum)} to go.")
    return render(request, "payouts/page.html", {
        "account": account,
        "balances": balances,
        "methods": methods,
        "has_stripe": any(m.type == MethodType.STRIPE for m in methods),
        "stripe_ready": any(m.type == MethodType.STRIPE and m.ready for m in methods),
        "cannot_request": cannot if request_form is None else [],
        "request_form": request_form or PayoutRequestForm(methods=ready),
        "paypal_form": paypal_form or PayPalForm(),
        "wise_form": wise_form or WiseForm(),
        "history": history,
        "pays_cash": wallet.pays_cash, "min_payout": wallet.min_payout, "short_of_minimum": short_of_minimum,
    }, status=status)


@login_required
@require_GET
def payouts_page(request):
    return _render(request, _account(request))


@login_required
@require_POST
def set_paypal(request):
    account = _account(request)
    form = PayPalForm(request.POST)
    if form.is_valid():
        try:
            services.payout_method_set(account=account, type=MethodType.PAYPAL, email=form.cleaned_data["email"],
                                       actor=request.user)
        except services.PayoutInvalid as exc:
            for field, text in exc.fields.items():
                form.add_error(field if field in form.fields else None, text)
        else:
            messages.success(request, "Your PayPal payout address is saved.")
            return redirect("payouts:index")
    return _render(request, account, paypal_form=form, status=400)


@login_required
@require_POST
def set_wise(request):
    account = _account(request)
    form = WiseForm(request.POST)
    if form.is_valid():
        try:
            services.payout_method_set(account=account, type=MethodType.WISE,
                                       recipient=form.cleaned_data["recipient"], actor=request.user)
        except services.PayoutInvalid as exc:
            for field, text in exc.fields.items():
                form.add_error(field if field in form.fields else None, text)
        else:
            messages.success(request, "Your Wise recipient is saved.")
            return redirect("payouts:index")
    return _render(request, account, wise_form=form, status=400)


@login_required
@require_POST
def stripe_connect(request):
    account = _account(request)
    try:
        url = services.stripe_onboarding_start(
            account=account, actor=request.user, refresh_url=request.build_absolute_uri(reverse("payouts:index")),
            return_url=request.build_absolute_uri(reverse("payouts:stripe-return")))
    except ProviderError as exc:
        log.warning("Stripe onboarding for account %s failed: %s", account.pk, exc)
        messages.error(request, "Stripe could not be reached to set up your account. Please try again later.")
        return redirect("payouts:index")
    return redirect(url)


@login_required
@require_GET
def stripe_return(request):
    account = _account(request)
    method = selectors.methods_of(account).filter(type=MethodType.STRIPE).first()
    if method is not None:
        try:
            method = services.stripe_status_refresh(method=method)
        except ProviderError as exc:
            log.warning("Stripe status refresh for account %s failed: %s", account.pk, exc)
        if method.ready:
            messages.success(request, "Your Stripe account is connected and can receive payouts.")
        else:
            messages.info(request, "Stripe has not finished checking your account yet; payouts open once it has.")
    return redirect("payouts:index")


@login_required
@require_POST
def request_payout(request):
    account = _account(request)
    form = PayoutRequestForm(request.POST, methods=[m for m in selectors.methods_of(account) if m.ready])
    # The method list only offers what is set up; an unknown choice still reaches the service,
    # which says why in words.
    amount, method = request.POST.get("amount", ""), request.POST.get("method", "")
    try:
        payout = services.payout_request(account=account, amount=amount.strip(), method=method,
                                         actor=request.user, source=services.USER)
    except services.PayoutInvalid as exc:
        form.is_valid()
        form.errors.clear()
        for field, text in exc.fields.items():
            # "Amount is more than …" reads as a sentence; the method's errors are sentences of their own.
            words = f"Amount {text}." if field == "amount" else f"{text[:1].upper()}{text[1:]}."
            form.add_error(field if field in form.fields else None, words)
        return _render(request, account, request_form=form, status=400)
    if payout.status == Payout.Status.REQUESTED:
        messages.success(request, f"Your payout of {money_text(payout.amount)} is requested: staff review it "
                                  "before it is sent.")
    else:  # auto-approved below the limit
        messages.success(request, f"Your payout of {money_text(payout.amount)} is requested and "
                                  f"{payout.get_status_display().lower()}.")
    return redirect("payouts:index")


@login_required
@require_POST
def cancel_payout(request, payout_id: int):
    account = _account(request)
    payout = Payout.objects.filter(pk=payout_id, account=account).first()
    if payout is None:
        raise Http404("no such payout")
    try:
        services.payout_cancel(payout=payout, actor=request.user)
    except services.PayoutRefused as exc:
        messages.error(request, str(exc).capitalize() + ".")
    else:
        messages.success(request, "The payout is cancelled; its amount is back in your balance.")
    return redirect("payouts:index")


@csrf_exempt
@require_POST
def stripe_webhook(request):
    # Read at most the limit (a chunked body has no Content-Length to check): larger is refused unstored.
    limit = settings.STRIPE_WEBHOOK_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    declared = int(declared) if declared.isdigit() else 0
    body = request.read(limit + 1) if declared <= limit else b""
    if declared > limit or len(body) > limit:
        return JsonResponse({"id": "", "status": "too_large", "error": f"the body is larger than {limit} bytes"},
                            status=413)
    delivery = webhooks.receive_stripe(body=body, headers=request.headers)
    status = {StripeWebhook.Status.REJECTED: 400, StripeWebhook.Status.FAILED: 500}.get(delivery.status, 200)
    return JsonResponse({"id": delivery.event_id, "status": delivery.status}, status=status)
