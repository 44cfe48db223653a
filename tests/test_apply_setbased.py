"""Applying stored money events set-based (referrals.batch_apply): the same accruals, ledger
and referral figures as applying them one by one, with a handful of queries per account."""
import pytest

from referrals.ingestion import apply_pending, ingest_batch
from referrals.models import Event, MilestoneAward
from tests.helpers import at, event, signup


@pytest.fixture
def stored_only(settings):
    settings.INGEST_INLINE_APPLY_MAX = 0  # store, leave applying to the test


def test_it_pays_a_milestone_on_the_charge_that_crosses_it_in_a_stored_batch(runpod, stored_only):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    ingest_batch([event("usage.charged", "bob", id=f"s-{i}", when=at(2), amount="600.00", product="serverless")
                  for i in range(2)])
    apply_pending()
    # $600 then $1,200: the second charge crosses $1,000, not the first (whose later siblings
    # were already stored when it was applied).
    assert MilestoneAward.objects.get().event == Event.objects.get(external_id="s-1")
