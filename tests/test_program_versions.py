"""Programme versions (issue 13.3): an edit is a new version with an effective time, every
accrual names the version it used, and replaying the log after any edit rebuilds the same state."""
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.utils import timezone

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine import versions
from referrals.engine.jobs import run_jobs
from referrals.engine.verification import verify
from referrals.models import Accrual, Application, Event, Program, ProgramVersion
from referrals.presets import load_preset
from tests.helpers import at, signup, spend, usd


def _pair():
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    return alice, bob


def test_verify_ledger_replays_a_raised_milestone_threshold(runpod):
    alice, bob = _pair()
    spend("bob", "1000.00", product="serverless", when=at(2))  # the milestone at $1,000 pays both
    assert balances_for(bob.pk)[Book.CREDITS] == usd("500.00")
    program = Program.objects.get(key="runpod-serverless-milestone")
    program.milestone_threshold = "2000.00"
    program.save()
    spend("bob", "10.00", product="serverless", when=at(3))
    assert verify() == []
    assert balances_for(bob.pk)[Book.CREDITS] == usd("500.00")


def test_verify_ledger_replays_an_edited_rate(runpod):
    alice, _ = _pair()
    spend("bob", "100.00", when=at(2))
    Program.objects.filter(key="runpod-revenue-share").update(rate="3.50")
    spend("bob", "100.00", when=at(3))
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")
    assert verify() == []
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")


def test_verify_ledger_replays_a_lowered_milestone_threshold_caught_up_by_the_job(runpod):
    alice, bob = _pair()
    spend("bob", "800.00", product="serverless", when=at(2))
    Program.objects.filter(kind=Program.Kind.MILESTONE).update(milestone_threshold="750.00")
    assert run_jobs(at=at(3), names=["milestones"])["milestones"] == {"milestones_awarded": 1}
    assert verify() == []
    assert balances_for(alice.pk)[Book.CREDITS] == usd("500.00")


# --------------------------------------------------------------------------- versions and what names them


def _rate_edit_history():
    alice, bob = _pair()
    spend("bob", "100.00", when=at(2))
    Program.objects.filter(key="runpod-revenue-share").update(rate="3.50")
    spend("bob", "100.00", when=at(3))
    return alice, bob


def test_every_accrual_names_the_version_that_made_it(runpod):
    _rate_edit_history()
    program = runpod[Program.Kind.REVENUE_SHARE]
    rows = list(Accrual.objects.filter(program=program).order_by("id").values_list("program_version", "amount"))
    assert rows == [(1, usd("2.00")), (2, usd("3.50"))]
    assert list(program.versions.order_by("number").values_list("number", "source")) == [
        (1, "load_preset"), (2, "code")]


def test_a_job_uses_and_names_the_version_in_force_at_its_time(runpod):
    alice, bob = _pair()
    spend("bob", "800.00", product="serverless", when=at(2))
    milestone = runpod[Program.Kind.MILESTONE]
    Program.objects.filter(pk=milestone.pk).update(milestone_threshold="750.00")
    run_jobs(at=at(3), names=["milestones"])
    assert set(Accrual.objects.filter(program=milestone).values_list("program_version", flat=True)) == {2}
    job_event = Event.objects.get(type="milestones.caught_up")
    assert job_event.payload["program_versions"][milestone.key] == 2


def test_the_gate_job_opens_applications_with_the_gate_in_force_at_its_time(runpod):
    alice, _ = _pair()
    spend("bob", "50.00", when=at(2))
    Program.objects.filter(key="runpod-revenue-share").update(gate_min_referrals=1, gate_min_spend="40.00")
    run_jobs(at=at(3), names=["revenue_share_gates"])
    application = Application.objects.get(account=alice)
    assert application.program_version == 2 and application.spend_at_open == usd("50.00")


def test_a_late_event_uses_the_rules_of_its_own_time(runpod):
    alice, bob = _pair()
    spend("bob", "100.00", when=at(5))
    version = versions.edit(Program.objects.get(key="runpod-revenue-share"), rate="3.50")
    assert version.number == 2 and version.effective_at > at(5)
    spend("bob", "100.00", when=at(4))  # arrives late: the 2 % of its time
    spend("bob", "100.00", when=at(6))  # after the edit: 3.5 %
    assert balances_for(alice.pk)[Book.PENDING] == usd("7.50")
    assert verify() == []


def test_an_edit_cannot_take_effect_before_an_applied_event_nor_in_the_future(runpod):
    _pair()
    spend("bob", "100.00", when=at(2))
    program = Program.objects.get(key="runpod-revenue-share")
    with pytest.raises(ValidationError) as refused:
        versions.edit(program, rate="9.00", effective_at=at(1))
    assert "effective_at" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        versions.edit(program, rate="9.00", effective_at=timezone.now() + timedelta(days=1))
    assert "effective_at" in refused.value.message_dict
    program.refresh_from_db()
    assert str(program.rate) == "2.00" and program.versions.count() == 1
    assert versions.edit(program, rate="9.00", effective_at=at(10)).effective_at == at(10)
    assert versions.program_at(program.pk, at(9)).rate == Decimal("2.00")
    assert versions.program_at(program.pk, at(10)).rate == Decimal("9.00")


def test_a_programme_created_later_does_not_earn_on_earlier_events_on_replay(runpod):
    alice, bob = _pair()
    spend("bob", "100.00", when=at(2))
    Program.objects.create(key="extra-share", name="Extra share", kind=Program.Kind.REVENUE_SHARE,
                           event_types=["usage.charged"], rate="1.00")
    spend("bob", "100.00", when=at(3))
    assert balances_for(alice.pk)[Book.PENDING] == usd("4.00")
    assert balances_for(alice.pk)[Book.CREDITS] == usd("1.00")
    assert verify() == []


def test_loading_a_preset_twice_adds_no_version(runpod):
    assert ProgramVersion.objects.count() == 3
    load_preset("runpod")
    assert ProgramVersion.objects.count() == 3
    assert set(ProgramVersion.objects.values_list("number", "effective_at")) == {(1, versions.EPOCH)}
    program = Program.objects.get(key="runpod-revenue-share")
    program.save()  # nothing changed
    assert program.versions.count() == 1


def test_the_kind_of_a_programme_cannot_change(runpod):
    program = runpod[Program.Kind.REVENUE_SHARE]
    with pytest.raises(ValidationError) as refused:
        Program.objects.filter(pk=program.pk).update(kind=Program.Kind.MILESTONE)
    assert "kind" in refused.value.message_dict
    program.kind = Program.Kind.MILESTONE
    with pytest.raises(ValidationError) as refused:
        program.full_clean()
    assert "kind" in refused.value.message_dict


def test_a_version_reads_like_a_program_and_cannot_be_saved(runpod, django_assert_num_queries):
    with django_assert_num_queries(1):
        found = versions.programs_at(at(1), kinds=[Program.Kind.REVENUE_SHARE, Program.Kind.MILESTONE])
    assert [p.key for p in found] == ["runpod-revenue-share", "runpod-serverless-milestone"]
    assert found[0].rate == Decimal("2.00") and found[0].event_types == ["usage.charged"]
    assert found[0].version == 1
    with pytest.raises(TypeError, match="read-only"):
        found[0].save()


# --------------------------------------------------------------------------- admin


@pytest.fixture
def admin_client(client, db):
    boss = get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-12345")
    client.force_login(boss)
    return client


def _form(program: Program, **changes) -> dict:
    data = {f: getattr(program, f) for f in (
        "key", "preset", "name", "kind", "description", "product", "pays_in", "hold_days", "gate_min_referrals",
        "gate_min_spend", "template_min_runtime_hours", "milestone_threshold", "referrer_bonus", "referred_bonus",
        "signup_credit", "credit_valid_days", "cashout_percent", "min_payout")}
    data |= {"enabled": "on", "requires_approval": "on", "event_types": '["usage.charged"]', "payout_methods": "[]",
             "rate": str(program.rate), "partner_rate": "", "partner_pays_in": "",
             "changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0"}
    return data | changes


def test_the_admin_edit_makes_a_version_and_shows_what_changed(runpod, admin_client):
    _pair()
    spend("bob", "100.00", when=at(2))
    program = Program.objects.get(key="runpod-revenue-share")
    url = f"/admin/referrals/program/{program.pk}/change/"
    response = admin_client.post(url, _form(program, rate="3.00", hold_days="7"))
    assert response.status_code == 302
    version = program.versions.get(number=2)
    assert version.source == "admin" and version.created_by.username == "boss"
    assert version.effective_at > at(2)
    page = admin_client.get(url).content.decode()
    assert "v2" in page and "rate: 2.00 → 3.00" in page and "hold_days: 0 → 7" in page
    assert "first version" in page
    listing = admin_client.get(f"/admin/referrals/programversion/?program__id__exact={program.pk}")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "rate: 2.00 → 3.00; hold_days: 0 → 7" in text and "first version" in text
    detail = admin_client.get(f"/admin/referrals/programversion/{version.pk}/change/")
    assert detail.status_code == 200 and "rate: 2.00 → 3.00" in detail.content.decode()
    # Saving the form unchanged adds no version; a kind change is refused on the form, naming it.
    assert admin_client.post(url, _form(program, rate="3.00", hold_days="7")).status_code == 302
    assert program.versions.count() == 2
    response = admin_client.post(url, _form(program, rate="3.00", hold_days="7", kind=Program.Kind.MILESTONE))
    assert response.status_code == 200 and "cannot change once the programme exists" in response.content.decode()
    assert program.versions.count() == 2
    spend("bob", "100.00", when=at(3))
    assert verify() == []


@pytest.mark.django_db(transaction=True)
def test_an_edit_waits_for_an_event_being_applied_and_takes_effect_after_it(postgres_only):
    load_preset("runpod")
    alice, _ = _pair()
    applying, edited = threading.Event(), threading.Event()
    order = []

    def apply_slowly():
        try:
            with transaction.atomic():
                spend("bob", "100.00", when=at(5))  # loads the versions: shared lock until commit
                applying.set()
                edited.wait(timeout=1.0)  # the edit must not finish while this is uncommitted
                order.append("applied")
        finally:
            connections.close_all()

    def edit():
        try:
            applying.wait(timeout=10)
            Program.objects.filter(key="runpod-revenue-share").update(rate="3.50")
            order.append("edited")
            edited.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=apply_slowly), threading.Thread(target=edit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["applied", "edited"]
    assert Program.objects.get(key="runpod-revenue-share").versions.get(number=2).effective_at > at(5)
    spend("bob", "100.00", when=at(6))
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")
    assert verify() == []
