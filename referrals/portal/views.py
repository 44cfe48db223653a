"""Portal pages: landing, sign-up (through the event service), the dashboard pages (overview, referrals,
earnings, wallet, templates, partner track) and template pages. Reads come from `selectors` and
`dashboard`; the one write (the Partner upgrade) goes through `services.account_change_track`."""
import logging
from datetime import timedelta
from functools import lru_cache
from itertools import islice
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from ledger.models import Balance, Book
from ledger.money import CENT, CentCarry, format_cents, format_exact, to_units
from referrals_site.client_ip import client_ip

from ..attribution.middleware import existing_visitor_id, read_referral_cookie
from ..engine import rollups
from ..engine.services import SignupFailed, account_change_track, portal_sign_up
from ..exports import csv_response
from ..models import Account, Program, Referral, Template, Track
from ..selectors import (
    account_balances,
    conversion_percent,
    earnings_by_program,
    earnings_totals,
    gate_progress,
    referral_stats,
)
from ..templatetags.figures import money_text
from . import dashboard as dashboard_reads
from .forms import PartnerUpgradeForm, ReferralFilterForm, SignupForm

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
                           ip=client_ip(request), device_id=existing_visitor_id(request), attribution=attribution)
        except SignupFailed as exc:
            form.add_error(None, str(exc))
        else:
            # Named explicitly: with more than one backend (e.g. django-axes) Django cannot pick.
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            response = redirect("dashboard")
            response.delete_cookie(settings.REFERRAL["COOKIE_NAME"], samesite="Lax")
            return response
    template = None
    if attribution and attribution.get("template"):
        template = Template.objects.filter(external_id=attribution["template"]).select_related("creator").first()
    inviter = None
    if attribution and attribution.get("code"):
        inviter = Account.objects.filter(referral_code=attribution["code"], code_enabled=True).only("email").first()
    return render(request, "portal/signup.html", {"form": form, "referred": bool(attribution), "template": template,
                                                  "inviter": inviter, "welcome": _welcome_offers()})


def _welcome_offers() -> list[str]:
    """What an invited account gets, in words (the enabled sign-up credits)."""
    return [f"{money_text(to_units(p.signup_credit))} of credit"
            + (f", valid {p.credit_valid_days} days" if p.credit_valid_days else "")
            for p in Program.objects.filter(enabled=True, kind=Program.Kind.SIGNUP_CREDIT) if p.signup_credit > 0]


def _account(request) -> Account | None:
    return Account.objects.filter(user=request.user).first()


def _not_linked(request):
    return render(request, "portal/not_linked.html")


@login_required
@require_GET
def dashboard(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    programs = list(Program.objects.filter(enabled=True))
    applications = {a.program_id: a for a in account.applications.select_related("program")}
    balances = account_balances(account)
    earned = rollups.earnings(account.pk)
    by_status = rollups.referral_totals(account.pk)
    stats = referral_stats(account, earned=earned, by_status=by_status)
    earnings = earnings_by_program(account, earned=earned)
    gates = [
        _gate_display(program, gate_progress(account, program, by_status=by_status), applications.get(program.pk))
        for program in programs if program.requires_approval
    ]
    template_gates = [row for row in dashboard_reads.template_rows(account, limit=5, earned=earned)
                      if row["needed_seconds"]] if any(p.kind == Program.Kind.TEMPLATE_SHARE for p in programs) else []
    blocks_cashout = account.purchased_credits > 0 and any(p.own_credits_block_cashout for p in programs)
    link = account.referral_link
    series = dashboard_reads.earnings_by_month(account, now=timezone.now(), earned=earned)
    joined_via = Referral.objects.filter(referred=account).select_related("template").first()
    context = {
        "account": account,
        "joined_via": joined_via,
        "nav": "overview",
        "currency": _symbol(),
        "balances": balances,
        "stats": {**stats, "conversion_percent": conversion_percent(stats["conversion_rate"])},
        "earnings": earnings,
        "earnings_totals": earnings_totals(earnings),
        "gates": gates,
        "template_gates": template_gates,
        "blocks_cashout": blocks_cashout,
        "purchased_credits": money_text(account.purchased_credits),
        "qr_data_uri": _qr_data_uri(link),
        "chart": dashboard_reads.bar_chart(series),
        "funnel": dashboard_reads.funnel(stats),
        **_share_links(link),
    }
    return render(request, "portal/dashboard.html", context)


SHARE_TEXT = "I use this platform and recommend it. Sign up through my referral link:"


def _share_links(link: str) -> dict:
    return {
        "share_text": SHARE_TEXT,
        "share_x": "https://twitter.com/intent/tweet?" + urlencode({"text": SHARE_TEXT, "url": link}),
        "share_linkedin": "https://www.linkedin.com/sharing/share-offsite/?" + urlencode({"url": link}),
    }


@lru_cache(maxsize=2048)
def _qr_data_uri(link: str) -> str:
    # An <img> with a data: URI needs no mark_safe and no inline markup (CSP allows img-src data:).
    # Cached: encoding the QR code took 20-60 ms, most of the overview's own time (bench/dashboard.py),
    # and a link's code never changes; 2,048 links of ~3 KB each stay within a few MB per process.
    return segno.make(link, error="m").svg_data_uri(scale=4, border=2, dark="#1d2330", light="#ffffff")


@login_required
@require_GET
def referrals_page(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    form = ReferralFilterForm(request.GET or None)
    query = status = ""
    if form.is_valid():
        query, status = form.cleaned_data["q"], form.cleaned_data["status"]
    error = ""
    try:
        page = dashboard_reads.referral_page(account, query=query, status=status, page=request.GET.get("page", 1),
                                             before=request.GET.get("before", ""), after=request.GET.get("after", ""))
    except dashboard_reads.BadCursor as exc:
        error = f"{'before' if request.GET.get('before') else 'after'}: {exc}; showing the newest referrals."
        page = dashboard_reads.referral_page(account, query=query, status=status)
    params = urlencode({k: v for k, v in (("q", query), ("status", status)) if v})
    milestones = dashboard_reads.milestone_progress(list(page.object_list))
    for referral in page.object_list:
        referral.milestone_rows = milestones.get(referral.pk, [])
    return render(request, "portal/referrals.html", {
        "account": account, "nav": "referrals", "currency": _symbol(), "form": form, "page": page, "error": error,
        "rows": [_referral_row(r) for r in page.object_list], "params": params,
        "counts": dashboard_reads.status_counts(account), "filtered": bool(query or status),
    })


def _referral_row(referral) -> dict:
    return {"referral": referral, "spend": format_cents(referral.spend), "purchases": format_cents(referral.purchases),
            "earned": format_cents(referral.earned), "earned_exact": format_exact(referral.earned)}


@login_required
@require_GET
def referral_detail(request, pk: int):
    account = _account(request)
    # Someone else's referral, or no account at all: the same 404, so ids reveal nothing.
    referral = get_object_or_404(Referral.objects.select_related("referred", "template"), pk=pk,
                                 referrer=account) if account else None
    if referral is None:
        raise Http404
    accruals = dashboard_reads.referral_accruals(account, referral)
    referral.milestone_rows = dashboard_reads.milestone_progress([referral])[referral.pk]
    rows = [{"accrual": a, "amount": format_cents(a.net), "exact": format_exact(a.net)} for a in accruals]
    referral.earned = sum(a.net for a in accruals if a.state != a.State.VOID)
    return render(request, "portal/referral_detail.html", {
        "account": account, "nav": "referrals", "currency": _symbol(), "row": _referral_row(referral),
        "referral": referral, "accruals": rows,
    })


@login_required
@require_GET
def earnings_page(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    error = ""
    try:
        window, lines = dashboard_reads.ledger_page(account, before=request.GET.get("before", ""),
                                                    after=request.GET.get("after", ""))
    except dashboard_reads.BadCursor as exc:
        field = "before" if request.GET.get("before") else "after"
        error = f"{field}: {exc}; showing the newest entries."
        window, lines = dashboard_reads.ledger_page(account)
    programs = earnings_by_program(account)
    return render(request, "portal/earnings.html", {
        "account": account, "nav": "earnings", "window": window, "error": error,
        "lines": [_line_display(line) for line in lines],
        "programs": programs, "totals": earnings_totals(programs),
    })


def _line_display(line) -> dict:
    return {"line": line, "exact_differs": format_exact(line.amount) != format_cents(line.amount)}


@login_required
@require_GET
def earnings_csv(request):
    """Every earning, newest first, and a total row. The cents column carries each row's
    sub-cent remainder into the next (`CentCarry`), so the rows add up to the total to the
    cent, and the total is the overview's total earned."""
    account = _account(request)
    if account is None:
        raise Http404
    currency = settings.REFERRAL["CURRENCY"].lower()

    def lines():
        # Described in batches: a handful of queries per 2,000 entries, never one per entry.
        entries = dashboard_reads.account_entries(account).iterator(chunk_size=2000)
        while batch := list(islice(entries, 2000)):
            yield from dashboard_reads.ledger_lines(account, batch)

    def rows():
        yield ["date", "programme", "description", f"amount_{currency}", "amount_exact"]
        carry = CentCarry()
        for line in lines():
            yield [line.at.date().isoformat(), line.program, line.description, format_cents(carry.take(line.amount)),
                   format_exact(line.amount)]
        yield ["", "", "Total earned", format_cents(carry.running), format_exact(carry.running)]

    return csv_response(rows(), filename=f"earnings-{account.referral_code}.csv")


@login_required
@require_GET
def wallet_page(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    now = timezone.now()
    balances = account_balances(account)
    wallet = dashboard_reads.wallet(account, now=now)
    soon = now + timedelta(days=3)
    grants = [{"grant": g, "soon": g.expires_at <= soon} for g in wallet.grants]
    short_of_minimum = max(wallet.min_payout - balances.cash_available, 0) if wallet.min_payout else 0
    programs = earnings_by_program(account)
    return render(request, "portal/wallet.html", {
        "account": account, "nav": "wallet",
        "balances": balances, "reserved": _reserved(account),
        "totals": earnings_totals(programs),
        "grants": grants,
        "held": wallet.held,
        "cashout_programs": [{"program": p, "cash_percent": f"{p.cashout_percent.normalize():f}",
                              "credit_percent": f"{(100 - p.cashout_percent).normalize():f}"}
                             for p in wallet.cashout_programs],
        "blocked_by_own_credits": wallet.blocked_by_own_credits,
        "purchased_credits": account.purchased_credits,
        "pays_cash": wallet.pays_cash,
        "min_payout": wallet.min_payout,
        "short_of_minimum": short_of_minimum,
    })


def _reserved(account: Account) -> int:
    return Balance.objects.filter(account=account, book=Book.RESERVED).values_list("amount", flat=True).first() or 0


@login_required
@require_GET
def templates_page(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    rows = dashboard_reads.template_rows(account)
    for row in rows:
        row["earned_display"] = format_cents(row["earned"])
        row["earned_exact"] = format_exact(row["earned"])
        row["held_display"] = format_cents(row["held"])
    return render(request, "portal/templates.html", {
        "account": account, "nav": "templates", "currency": _symbol(), "rows": rows,
    })


@login_required
@require_http_methods(["GET", "POST"])
def partner_page(request):
    account = _account(request)
    if account is None:
        return _not_linked(request)
    offers = [p for p in Program.objects.filter(enabled=True, kind=Program.Kind.PURCHASE_COMMISSION)
              if p.partner_rate is not None]
    types = sorted({t for p in offers for t in p.payout_methods})
    method = dashboard_reads.payout_method_summary(account, types=types)
    # An unticked box posts nothing: bind on POST whatever the body, so the error shows.
    form = PartnerUpgradeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if account.track == Track.PARTNER:
            messages.info(request, "You are already on the Partner track.")
            return redirect("partner")
        confirmed = form.is_valid()
        if not offers:
            form.add_error(None, "No programme offers a Partner track at the moment.")
        elif method["required"] and not method["connected"]:
            form.add_error(None, "Connect a payout account first (step 1), then confirm the upgrade.")
        elif confirmed:
            account_change_track(account=account, track=Track.PARTNER, actor=request.user, source="portal")
            messages.success(request, "You are now on the Partner track. Purchases by your referrals from now on "
                                      "earn the Partner rate as cash.")
            return redirect("partner")
    since = account.track_changes.filter(track=Track.PARTNER).order_by("-effective_at").first()
    return render(request, "portal/partner.html", {
        "account": account, "nav": "partner", "currency": _symbol(), "form": form, "offers": [
            {"program": p, "basic_rate": f"{p.rate.normalize():f}", "partner_rate": f"{p.partner_rate.normalize():f}",
             "basic_pays": p.get_pays_in_display().lower(),
             "partner_pays": (Program.PaysIn(p.partner_pays_in).label if p.partner_pays_in
                              else p.get_pays_in_display()).lower(),
             "min_payout": format_cents(to_units(p.min_payout)) if p.min_payout else ""}
            for p in offers],
        "method": method, "is_partner": account.track == Track.PARTNER, "since": since,
    })


def _gate_display(program: Program, progress: dict, application) -> dict:
    rows = []
    if progress["referrals_needed"]:
        rows.append({"label": "Referred accounts", "value": progress["referrals"], "max": progress["referrals_needed"],
                     "text": f"{progress['referrals']}/{progress['referrals_needed']} referrals"})
    if progress["spend_needed"]:
        rows.append({"label": "Spend of referred accounts", "value": max(progress["spend"], 0) // CENT,
                     "max": progress["spend_needed"] // CENT,
                     "text": f"{money_text(progress['spend'])} of {money_text(progress['spend_needed'])}"})
    return {"program": program, "rows": rows, "application": application}


def _symbol() -> str:
    currency = settings.REFERRAL["CURRENCY"]
    return CURRENCY_SYMBOLS.get(currency, f"{currency} ")


@require_GET
def template_page(request, external_id: str):
    template = get_object_or_404(Template, external_id=external_id)
    runtime_hours = template.runtime_seconds // 3600
    return render(request, "portal/template_page.html", {"template": template, "runtime_hours": runtime_hours,
                                                         "welcome": _welcome_offers()})
