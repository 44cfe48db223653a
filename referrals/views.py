"""Portal pages: landing, sign-up (through the event service), dashboard and template pages."""
import ipaddress
import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from ledger.money import CENT, format_cents, format_exact

from .forms import SignupForm
from .middleware import existing_visitor_id, read_referral_cookie
from .models import Account, Program, Template
from .selectors import account_balances, earnings_by_program, gate_progress, referral_stats
from .services import SignupFailed, portal_sign_up

log = logging.getLogger(__name__)

User = get_user_model()

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


@require_GET
def home(request):
    programs = Program.objects.filter(enabled=True).only("name", "description")
    return render(request, "portal/home.html", {"programs": programs})


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    attribution = read_referral_cookie(request)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = portal_sign_up(email=form.cleaned_data["email"], password=form.cleaned_data["password1"],
                           ip=_client_ip(request), device_id=existing_visitor_id(request), attribution=attribution)
        except SignupFailed as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user)
            response = redirect("dashboard")
            response.delete_cookie(settings.REFERRAL["COOKIE_NAME"], samesite="Lax")
            return response
    template = None
    if attribution and attribution.get("template"):
        template = Template.objects.filter(external_id=attribution["template"]).first()
    return render(request, "portal/signup.html", {"form": form, "referred": bool(attribution), "template": template})


def _client_ip(request) -> str:
    try:
        return str(ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").strip()))
    except ValueError:
        return ""


@login_required
@require_GET
def dashboard(request):
    account = Account.objects.filter(user=request.user).first()
    if account is None:
        return render(request, "portal/not_linked.html")
    programs = list(Program.objects.filter(enabled=True))
    applications = {a.program_id: a for a in account.applications.select_related("program")}
    balances = account_balances(account)
    stats = referral_stats(account)
    earnings = [
        # Displays round to the cent (SPEC "Money"); the exact figure stays in the tooltip.
        {**row, "earned": format_cents(row["earned"]), "earned_exact": format_exact(row["earned"]),
         "pending": format_cents(row["pending"]), "available": format_cents(row["available"])}
        for row in earnings_by_program(account)
    ]
    gates = [
        _gate_display(program, gate_progress(account, program), applications.get(program.pk))
        for program in programs if program.requires_approval
    ]
    templates = list(account.templates.select_related("creator")[:50])
    blocks_cashout = account.purchased_credits > 0 and any(p.own_credits_block_cashout for p in programs)
    share_text = "Sign up through my referral link"
    link = account.referral_link
    context = {
        "account": account,
        "currency": _symbol(),
        "balances": {"credits": format_cents(balances.credits), "cash_available": format_cents(balances.cash_available),
                     "pending": format_cents(balances.pending)},
        "stats": {**stats, "total_earnings": format_cents(stats["total_earnings"]),
                  "conversion_percent": f"{stats['conversion_rate'] * 100:.1f}"},
        "earnings": earnings,
        "gates": gates,
        "templates": templates,
        "blocks_cashout": blocks_cashout,
        "purchased_credits": format_cents(account.purchased_credits),
        "share_x": "https://twitter.com/intent/tweet?" + urlencode({"text": share_text, "url": link}),
        "share_linkedin": "https://www.linkedin.com/sharing/share-offsite/?" + urlencode({"url": link}),
    }
    return render(request, "portal/dashboard.html", context)


def _gate_display(program: Program, progress: dict, application) -> dict:
    symbol = _symbol()
    rows = []
    if progress["referrals_needed"]:
        rows.append({"label": "Referred accounts", "value": progress["referrals"], "max": progress["referrals_needed"],
                     "text": f"{progress['referrals']}/{progress['referrals_needed']} referrals"})
    if progress["spend_needed"]:
        spend, needed = format_cents(progress["spend"]), format_cents(progress["spend_needed"])
        rows.append({"label": "Spend of referred accounts", "value": max(progress["spend"], 0) // CENT,
                     "max": progress["spend_needed"] // CENT, "text": f"{symbol}{spend}/{symbol}{needed}"})
    return {"program": program, "rows": rows, "application": application}


def _symbol() -> str:
    currency = settings.REFERRAL["CURRENCY"]
    return CURRENCY_SYMBOLS.get(currency, f"{currency} ")


@require_GET
def template_page(request, external_id: str):
    template = get_object_or_404(Template, external_id=external_id)
    runtime_hours = template.runtime_seconds // 3600
    return render(request, "portal/template_page.html", {"template": template, "runtime_hours": runtime_hours})
