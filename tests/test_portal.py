"""The portal's pages: landing, sign-up, login, password reset, dashboard, template pages, demo data."""
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from referrals.models import Account, Application, Click, Event, Program, Referral
from tests.helpers import at, event, push, signup, spend

User = get_user_model()
PASSWORD = "Sturdy-pass-9911"


@pytest.fixture
def alice_user(db):
    """Alice has a portal login linked to her account."""
    alice = signup("alice", email="alice@example.com")
    user = User.objects.create_user("alice@example.com", "alice@example.com", PASSWORD)
    Account.objects.filter(pk=alice.pk).update(user=user)
    return user


@pytest.fixture
def charlie_user(db):
    """Charlie can log in but no account belongs to him."""
    return User.objects.create_user("charlie@example.com", "charlie@example.com", PASSWORD)


# --------------------------------------------------------------------------- landing and template pages


def test_it_explains_the_enabled_programmes_on_the_home_page(client, runpod):
    Program.objects.filter(key="runpod-serverless-milestone").update(enabled=False)
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<html lang="en">' in page
    assert "Lifetime revenue share" in page and "Template revenue share" in page
    assert "Serverless milestone" not in page
    assert 'href="/signup/"' in page and 'href="/login/"' in page


def test_it_serves_the_template_page_with_and_without_a_trailing_slash(client, db):
    signup("alice")
    push(event("template.published", "alice", template="sd-webui", name="Stable Diffusion WebUI"))
    for path in ("/t/sd-webui/", "/t/sd-webui"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Stable Diffusion WebUI" in response.content.decode()
        assert "Deploy this template" in response.content.decode()


def test_it_answers_404_for_an_unknown_template(client, db):
    assert client.get("/t/nope/").status_code == 404
    assert client.get("/t/nope").status_code == 404


# --------------------------------------------------------------------------- sign-up, login, logout, reset


def test_it_signs_up_logs_in_and_lands_on_the_dashboard(client, runpod):
    response = client.post("/signup/", {"email": "Dora@Example.com", "password1": PASSWORD, "password2": PASSWORD},
                           follow=True)
    assert response.redirect_chain[-1][0] == "/dashboard/"
    account = Account.objects.get(user__username="dora@example.com")
    assert account.referral_link in response.content.decode()
    created = Event.objects.get(account=account, type="account.created")
    assert created.source == Event.Source.PORTAL and created.external_id.startswith("portal-signup-")


@pytest.mark.parametrize(("data", "field"), [
    ({"email": "dora@example.com", "password1": PASSWORD, "password2": PASSWORD + "x"}, "password2"),
    ({"email": "dora@example.com", "password1": "password", "password2": "password"}, "password1"),
    ({"email": "dora@example.com", "password1": "12345678901", "password2": "12345678901"}, "password1"),
    ({"email": "not-an-email", "password1": PASSWORD, "password2": PASSWORD}, "email"),
    ({"email": "ALICE@example.com", "password1": PASSWORD, "password2": PASSWORD}, "email"),
])
def test_it_refuses_a_bad_sign_up_and_creates_nothing(client, alice_user, data, field):
    users, accounts = User.objects.count(), Account.objects.count()
    response = client.post("/signup/", data)
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert (User.objects.count(), Account.objects.count()) == (users, accounts)


def test_it_logs_in_with_the_email_in_any_case_and_logs_out_by_post(client, alice_user):
    response = client.post("/login/", {"username": "Alice@Example.com", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    page = client.get("/dashboard/").content.decode()
    assert 'action="/logout/"' in page
    assert client.get("/logout/").status_code == 405, "logging out takes a POST"
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/dashboard/").status_code == 302


def test_it_refuses_a_wrong_password(client, alice_user):
    response = client.post("/login/", {"username": "alice@example.com", "password": "wrong-password"})
    assert response.status_code == 200
    assert "correct e-mail and password" in response.content.decode()


def test_it_sends_a_password_reset_link_that_works(client, alice_user, mailoutbox):
    assert client.get("/password-reset/").status_code == 200
    response = client.post("/password-reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/done/"
    assert len(mailoutbox) == 1
    link = next(line for line in mailoutbox[0].body.splitlines() if "/password-reset/" in line)
    response = client.get(link.split("testserver", 1)[1], follow=True)
    assert response.status_code == 200 and response.context["validlink"]
    new_password = "Another-sturdy-7722"
    response = client.post(response.redirect_chain[-1][0], {"new_password1": new_password,
                                                             "new_password2": new_password})
    assert response["Location"] == "/password-reset/complete/"
    assert client.login(username="alice@example.com", password=new_password)


# --------------------------------------------------------------------------- dashboard


def test_it_requires_login_for_the_dashboard(client, db):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/dashboard/"


def test_it_tells_a_login_without_an_account_that_it_is_not_linked(client, charlie_user):
    client.force_login(charlie_user)
    response = client.get("/dashboard/")
    assert response.status_code == 200
    assert "not linked" in response.content.decode()


def _eighteen_referrals_with_312_40_of_spend(alice: Account) -> None:
    for i in range(18):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "23.40" if i == 0 else "17.00", when=at(2))


def test_it_shows_the_link_balances_stats_and_gate_progress(client, runpod, alice_user,
                                                           django_assert_max_num_queries):
    alice = Account.objects.get(user=alice_user)
    _eighteen_referrals_with_312_40_of_spend(alice)
    Click.objects.create(referrer=alice, visitor_id="v1", created_at=at(1))
    client.force_login(alice_user)
    with django_assert_max_num_queries(20):
        response = client.get("/dashboard/")
    page = response.content.decode()
    assert f'value="{alice.referral_link}" readonly' in page
    assert 'data-copy-target="referral-link"' in page and "/static/js/copy.js" in page
    assert "<script>" not in page, "no inline scripts"
    assert "$6.24" in page, "2% of $312.40 is $6.248 pending, shown rounded down"
    assert "6.248" in page, "earnings per programme keep their sub-cent digits"
    assert "18/25 referrals" in page
    assert "$312.40 of $500.00" in page
    assert '<progress id="gate-' in page and 'max="25" value="18"' in page and 'max="50000" value="31240"' in page
    assert response.context["stats"]["total_referrals"] == 18
    assert response.context["stats"]["conversion_percent"] == "100.0"


def test_it_shows_the_application_status(client, runpod, alice_user):
    alice = Account.objects.get(user=alice_user)
    Application.objects.create(program=runpod["revenue_share"], account=alice, opened_at=at(3))
    client.force_login(alice_user)
    page = client.get("/dashboard/").content.decode()
    assert "Application: <strong>Open</strong>" in page


def test_it_keeps_the_dashboard_queries_bounded_whatever_the_data(client, runpod, alice_user,
                                                                  django_assert_max_num_queries):
    alice = Account.objects.get(user=alice_user)
    for i in range(40):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "10.00", when=at(2))
        push(event("template.published", "alice", template=f"tpl-{i}", when=at(2)))
    client.force_login(alice_user)
    with django_assert_max_num_queries(20):
        assert client.get("/dashboard/").status_code == 200


# --------------------------------------------------------------------------- demo data


def _counts() -> dict:
    return {model.__name__: model.objects.count() for model in (User, Account, Event, Click, Referral, Application)}


def test_it_seeds_the_demo_once_however_often_it_runs(runpod, capsys):
    call_command("seed_demo")
    first = _counts()
    call_command("seed_demo")
    assert _counts() == first
    out = capsys.readouterr().out
    assert f"Staff login: admin / admin-demo-pass at {settings.SITE_URL}/admin/" in out
    assert "demo@example.com / demo-pass-1234" in out
    demo = Account.objects.get(user__username="demo@example.com")
    assert User.objects.get(username="admin").is_superuser
    assert Referral.objects.filter(referrer=demo).count() >= 25
    assert Click.objects.filter(referrer=demo, is_unique=False).exists()
    assert Application.objects.get(account=demo).status == Application.Status.OPEN
    assert demo.templates.exists()
    assert not Event.objects.filter(occurred_at__gt=timezone.now()).exists(), "nothing is dated in the future"


def test_it_seeds_earnings_for_every_enabled_programme(runpod, apimarket, vast):
    call_command("seed_demo")
    for program in Program.objects.filter(enabled=True):
        assert program.accruals.exists(), f"{program.key} earned nothing in the demo"


def test_the_invite_and_template_pages_say_who_invited_you_and_what_you_get(client, apimarket):
    from tests.helpers import event, push, signup

    alice = signup("alice", email="alice@example.com")
    push(event("template.published", "alice", template="comfy", name="ComfyUI"))
    client.get(f"/?ref={alice.referral_code}")
    page = client.get("/signup/").content.decode()
    assert "a•••e@e•••.com invited you through a referral link" in page
    assert "you get $2.50 of credit, valid 30 days" in page
    page = client.get("/t/comfy/").content.decode()
    assert "Shared by a•••e@e•••.com" in page and "New accounts get $2.50 of credit, valid 30 days" in page
