"""Template publishing applied set-based (referrals.engine.templates): a run of publications gives
exactly the templates, errors and answers of applying them one by one, in a number of queries
that does not grow with the run."""
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from referrals.engine import events as ev
from referrals.engine.ingestion import apply_pending, ingest_batch
from referrals.models import Event, Template
from tests.helpers import at, event, one_per_call_rolled_back, signup, store


def _publications(n: int) -> list[dict]:
    # Each template published (and renamed) three times by its creator, alice or bob.
    raws = [event(ev.TEMPLATE_PUBLISHED, "alice" if (i // 3) % 2 else "bob", id=f"pub-{i}", when=at(1, hours=i),
                  template=f"tpl-{i // 3}", **({"name": f"Template {i}"} if i % 4 else {}))
            for i in range(n)]
    raws[3]["account"] = "nobody"  # unknown account: rejected
    raws[7]["account"] = "alice"  # bob's tpl-2: rejected, another account published it
    return raws


def _templates() -> list[tuple]:
    return sorted(Template.objects.values_list("external_id", "creator__external_id", "name", "runtime_seconds"))


def _events() -> list[tuple]:
    return sorted((external_id, account, error, applied is None) for external_id, account, error, applied in
                  Event.objects.filter(type=ev.TEMPLATE_PUBLISHED).values_list(
                      "external_id", "account__external_id", "apply_error", "applied_at"))


def test_a_stored_run_of_publications_gives_what_one_by_one_gives_in_a_constant_number_of_queries(runpod):
    signup("alice", when=at(0))
    signup("bob", when=at(0))
    queries = {}
    for n in (12, 48):
        with transaction.atomic():
            stored = [store(raw) for raw in _publications(n)]
            for one in stored:  # one by one: each a batch of one, applied by the step
                apply_pending(event_ids=[one.pk])
            expected = (_templates(), _events())
            transaction.set_rollback(True)
        with transaction.atomic():
            [store(raw) for raw in _publications(n)]
            with CaptureQueriesContext(connection) as captured:
                apply_pending()
            assert (_templates(), _events()) == expected
            queries[n] = len(captured)
            transaction.set_rollback(True)
    assert {template for template, *_ in expected[0]} == {f"tpl-{i}" for i in range(16)}
    errors = {external_id: error for external_id, _, error, _ in expected[1] if error}
    assert set(errors) == {"pub-3", "pub-7"} and "already published by another account" in errors["pub-7"]
    # The two rejected ones end a run each and go to the step; the rest are runs.
    assert queries[48] == queries[12], queries


def test_an_api_batch_of_publications_answers_as_one_per_call(runpod):
    signup("alice", when=at(0))
    signup("bob", when=at(0))
    batch = _publications(24)
    expected, one_by_one, reference = one_per_call_rolled_back(batch, lambda: (_templates(), _events()))
    with CaptureQueriesContext(connection) as queries:
        results = [result.as_dict() for result in ingest_batch(batch)]
    assert results == expected
    assert {r["id"]: r["error"]["code"] for r in results if r["status"] == "rejected"}["pub-3"] == "unknown_account"
    assert (_templates(), _events()) == one_by_one
    assert len(queries) < reference, (len(queries), reference)
