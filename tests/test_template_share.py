"""SPEC A.3: 1% of template runtime spend for its creator, held until 24 h of runtime."""
from ledger.models import Book
from ledger.money import format_cents, format_exact
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.models import Program, Template
from tests.helpers import at, event, push, signup, spend, usd

HOUR = 3600


def _creator_with_template():
    carol = signup("carol")
    push(event("template.published", "carol", template="comfyui", name="ComfyUI"))
    return carol


def test_it_pays_one_percent_of_a_weeks_runtime_by_twenty_users(runpod):
    carol = _creator_with_template()
    for user in range(20):
        signup(f"u{user}")
        for day in range(7):  # $0.54/h for 24 h a day, a week
            spend(f"u{user}", "12.96", template="comfyui", runtime_seconds=24 * HOUR, when=at(1 + day))
    credits = balances_for(carol.pk)[Book.CREDITS]
    assert credits == usd("18.144")  # 1% of 20 x 0.54 x 168 = $1,814.40
    assert format_exact(credits) == "18.144"
    assert format_cents(credits) == "18.14"


def test_it_holds_earnings_until_24_hours_of_runtime_then_releases_them(runpod):
    carol = _creator_with_template()
    signup("dave")
    spend("dave", "10.00", template="comfyui", runtime_seconds=23 * HOUR, when=at(1))
    books = balances_for(carol.pk)
    assert books[Book.PENDING] == usd("0.10") and books[Book.CREDITS] == 0
    spend("dave", "0.54", template="comfyui", runtime_seconds=HOUR, when=at(2))
    books = balances_for(carol.pk)
    assert books[Book.PENDING] == 0
    assert books[Book.CREDITS] == usd("0.1054")
    assert Template.objects.get().qualified_at == at(2)


def test_the_job_qualifies_templates_when_the_gate_is_lowered(runpod):
    carol = _creator_with_template()
    signup("dave")
    spend("dave", "6.48", template="comfyui", runtime_seconds=12 * HOUR, when=at(1))
    Program.objects.filter(kind=Program.Kind.TEMPLATE_SHARE).update(template_min_runtime_hours=12)
    assert run_jobs(at=at(2), names=["template_gates"])["template_gates"]["accruals_released"] >= 1
    assert balances_for(carol.pk)[Book.CREDITS] == usd("0.0648")
    assert run_jobs(at=at(2), names=["template_gates"])["template_gates"] == {"accruals_released": 0}


def test_it_does_not_count_runtime_after_the_as_of_time(runpod):
    carol = _creator_with_template()
    signup("dave")
    Program.objects.filter(kind=Program.Kind.TEMPLATE_SHARE).update(template_min_runtime_hours=100)
    spend("dave", "20.00", template="comfyui", runtime_seconds=30 * HOUR, when=at(1))
    spend("dave", "20.00", template="comfyui", runtime_seconds=30 * HOUR, when=at(5))
    Program.objects.filter(kind=Program.Kind.TEMPLATE_SHARE).update(template_min_runtime_hours=40)
    run_jobs(at=at(2), names=["template_gates"])
    assert Template.objects.get().qualified_at is None
    run_jobs(at=at(6), names=["template_gates"])
    assert Template.objects.get().qualified_at == at(6)
    assert balances_for(carol.pk)[Book.CREDITS] == usd("0.40")
