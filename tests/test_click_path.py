"""Issue 9 and issue 8 part 2: the referral click's fast path.

Code lookups come from a per-process dict, then the shared cache, then the database, and go stale
for at most CLICK_CODE_CACHE_SECONDS. Clicks are written by a background writer in batches: on its
timer, when a batch is full, at process exit (a real gunicorn worker stopped with SIGTERM), and
first thing when a sign-up names a click that is still waiting. One click per visitor and referrer
and CLICK_UNIQUE_WINDOW counts as unique.

The other test modules write clicks in the request (conftest sets CLICK_WRITE="direct"): their
rolled-back transactions cannot share rows with the writer's own connection. Here the buffered
writer runs for real, in transactional tests.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from http.client import HTTPConnection
from pathlib import Path

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from referrals.attribution import clicks
from referrals.attribution.middleware import read_referral_cookie
from referrals.engine.services import ingest_event
from referrals.models import Account, Click, Referral, Template
from tests.helpers import event, free_port, push, signup

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Sturdy-pass-9911"
DAY, HOUR = 24 * 3600, 3600


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def remembered(client: Client) -> dict | None:
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.COOKIES = {name: morsel.value for name, morsel in client.cookies.items()}
    return read_referral_cookie(request)


@pytest.fixture
def alice(db):
    return signup("alice")


@pytest.fixture
def buffered(settings, transactional_db):
    """The background writer as in production, with a timer long enough not to fire unless asked."""
    settings.REFERRAL = {
        **settings.REFERRAL,
        "CLICK_WRITE": "buffered",
        "CLICK_FLUSH_INTERVAL_MS": 60_000,
        "CLICK_FLUSH_BATCH": 10_000,
    }
    yield settings
    clicks.buffer.stop()


def set_writer(settings, **values) -> None:
    settings.REFERRAL = {**settings.REFERRAL, **values}


# --------------------------------------------------------------------------- code lookups


def test_it_resolves_a_known_code_without_a_query_once_cached(alice, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk
    with django_assert_num_queries(0):
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk


def test_it_falls_back_from_the_process_dict_to_the_shared_cache_then_the_database(alice, django_assert_num_queries):
    clicks.referrer_for_code(alice.referral_code)
    clicks.clear_local_cache()  # as another server process would start: only the shared cache has it
    with django_assert_num_queries(0):
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk
    clicks.clear_local_cache()
    cache.clear()
    with django_assert_num_queries(1):
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk


def test_it_caches_unknown_codes_so_made_up_codes_do_not_reach_the_database(db, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert clicks.referrer_for_code("zz9zz9zz") is None
    with django_assert_num_queries(0):
        for _ in range(5):
            assert clicks.referrer_for_code("zz9zz9zz") is None


def test_it_answers_a_referral_link_without_touching_the_database_once_the_code_is_cached(
    buffered, django_assert_num_queries
):
    alice = signup("alice")
    Client().get("/", {"ref": alice.referral_code})
    with django_assert_num_queries(0):
        response = Client().get("/", {"ref": alice.referral_code})
    assert response.status_code == 302 and response["Location"] == "/"
    clicks.buffer.flush()
    assert Click.objects.count() == 2


def test_it_stops_counting_a_code_at_once_when_staff_disable_it(client, alice, django_capture_on_commit_callbacks):
    boss = get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-12345")
    client.get("/", {"ref": alice.referral_code})
    assert Click.objects.count() == 1, "the code is now cached in this process and the shared cache"

    admin = Client()
    admin.force_login(boss)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            f"/admin/referrals/account/{alice.pk}/change/", {"user": "", "email": alice.email, "_save": "Save"}
        )  # code_enabled unticked
    assert response.status_code == 302, response.content[:500]
    alice.refresh_from_db()
    assert not alice.code_enabled

    response = Client().get("/", {"ref": alice.referral_code})
    assert response.status_code == 302 and response["Location"] == "/"
    assert Click.objects.count() == 1, "no click counted for the disabled code"
    assert django_settings.REFERRAL["COOKIE_NAME"] not in response.cookies


def test_it_forgets_an_old_code_and_learns_the_new_one_when_a_code_changes(alice, django_capture_on_commit_callbacks):
    old = alice.referral_code
    assert clicks.referrer_for_code(old) == alice.pk
    assert clicks.referrer_for_code("newcode1") is None  # cached as unknown
    with django_capture_on_commit_callbacks(execute=True):
        Account.objects.filter(pk=alice.pk).update(referral_code="newcode1")
        clicks.forget_codes(old, "newcode1")
        assert clicks.referrer_for_code(old) == alice.pk, "forgotten once the change is committed"
    assert clicks.referrer_for_code(old) is None
    assert clicks.referrer_for_code("newcode1") == alice.pk


def test_it_trusts_a_stale_lookup_for_at_most_the_cache_ttl_in_every_layer(alice, settings):
    # A change made by another process (here: behind the cache's back) is seen once the entry read
    # from the database expires, whichever layer still holds it.
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_CODE_CACHE_SECONDS": 30}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk
        Account.objects.filter(pk=alice.pk).update(code_enabled=False)
        clock.shift(timedelta(seconds=20))
        clicks.clear_local_cache()  # a process that only has the shared cache's copy ...
        assert clicks.referrer_for_code(alice.referral_code) == alice.pk
        clock.shift(timedelta(seconds=11))  # ... keeps the read's expiry, not a fresh 30 s
        assert clicks.referrer_for_code(alice.referral_code) is None


# --------------------------------------------------------------------------- unique clicks


@pytest.mark.parametrize(
    ("window", "unique_after"),
    [
        (DAY, {"59 minutes": False, "61 minutes": False, "23 hours": False, "24 hours 1 minute": True}),
        (HOUR, {"59 minutes": False, "61 minutes": True, "23 hours": True, "24 hours 1 minute": True}),
    ],
)
def test_it_counts_one_unique_click_per_visitor_and_referrer_in_the_window(
    client, alice, settings, window, unique_after
):
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_UNIQUE_WINDOW": window}
    offsets = {
        "59 minutes": timedelta(minutes=59),
        "61 minutes": timedelta(minutes=61),
        "23 hours": timedelta(hours=23),
        "24 hours 1 minute": timedelta(hours=24, minutes=1),
    }
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        client.get("/", {"ref": alice.referral_code})
        for label, offset in offsets.items():
            clock.move_to(start + offset)
            client.get("/", {"ref": alice.referral_code})
            assert Click.objects.latest("id").is_unique == unique_after[label], label
    assert Click.objects.get(created_at=start).is_unique


def test_it_defaults_to_spec_s_one_day_window():
    assert django_settings.REFERRAL["CLICK_UNIQUE_WINDOW"] == DAY


def test_it_counts_a_click_unique_when_the_cache_cannot_tell(client, alice):
    # Redis down: the click is still counted, as unique, and the visitor still lands on the page.
    redis_down = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    with override_settings(CACHES=redis_down):
        for _ in range(2):
            response = client.get("/", {"ref": alice.referral_code})
            assert response.status_code == 302 and response["Location"] == "/"
            assert remembered(client)["code"] == alice.referral_code
    assert Click.objects.filter(is_unique=True).count() == 2


# --------------------------------------------------------------------------- the buffered writer


def test_it_answers_before_the_click_is_written_and_writes_it_on_the_timer(buffered):
    alice = signup("alice")
    set_writer(buffered, CLICK_FLUSH_INTERVAL_MS=1000)
    response = Client().get("/", {"ref": alice.referral_code})
    assert response.status_code == 302
    assert not Click.objects.exists(), "the visitor did not wait for the INSERT"
    assert len(clicks.buffer) == 1
    started = time.monotonic()
    assert wait_for(Click.objects.exists), "the writer's timer wrote the click"
    assert time.monotonic() - started < 5
    click = Click.objects.get()
    assert click.referrer == alice and click.public_id.hex == remembered_click(response)


def remembered_click(response) -> str:
    client = Client()
    client.cookies = response.cookies
    return remembered(client)["click"]


def test_it_writes_at_once_when_a_batch_is_full(buffered):
    alice = signup("alice")
    set_writer(buffered, CLICK_FLUSH_BATCH=5)  # the timer (60 s) will not fire during the test
    for _ in range(5):
        Client().get("/", {"ref": alice.referral_code})
    assert wait_for(lambda: Click.objects.count() == 5, timeout=5)


def test_it_writes_what_is_buffered_when_the_process_exits(buffered):
    alice = signup("alice")
    for _ in range(3):
        Client().get("/", {"ref": alice.referral_code})
    assert not Click.objects.exists()
    clicks.buffer.close()  # what atexit runs
    try:
        assert Click.objects.count() == 3
        Client().get("/", {"ref": alice.referral_code})
        assert Click.objects.count() == 4, "a click after the last flush is written in the request"
    finally:
        clicks.buffer._closed = False


def test_it_keeps_clicks_while_the_database_refuses_them_and_writes_them_later(buffered):
    alice = signup("alice")
    set_writer(buffered, CLICK_FLUSH_INTERVAL_MS=50)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE referrals_click RENAME TO referrals_click_away")
    try:
        for _ in range(4):
            assert Client().get("/", {"ref": alice.referral_code}).status_code == 302
        time.sleep(0.5)  # several failed attempts by the writer
        assert len(clicks.buffer) == 4, "nothing dropped while the table is missing"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE referrals_click_away RENAME TO referrals_click")
    assert wait_for(lambda: Click.objects.count() == 4, timeout=15), "written once the database accepts them"
    assert len(clicks.buffer) == 0


def test_it_attributes_a_portal_sign_up_whose_click_is_still_buffered(buffered):
    alice = signup("alice")
    client = Client()
    client.get("/", {"ref": alice.referral_code})
    public_id = remembered(client)["click"]
    assert not Click.objects.exists() and len(clicks.buffer) == 1
    response = client.post("/signup/", {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    referral = Referral.objects.get(referred__user__username="carol@example.com")
    assert referral.referrer == alice
    assert referral.click is not None and referral.click.public_id.hex == public_id
    clicks.buffer.flush()
    assert Click.objects.count() == 1, "the batch skipped the click the sign-up wrote"


def test_it_attributes_an_api_sign_up_naming_a_buffered_click_by_its_public_id(buffered):
    alice = signup("alice")
    client = Client()
    client.get("/", {"ref": alice.referral_code})
    public_id = remembered(client)["click"]
    push(event("account.created", "bob", email="bob@example.com", click_id=public_id, when=timezone.now()))
    referral = Referral.objects.get(referred__external_id="bob")
    assert referral.referrer == alice and referral.click.public_id == uuid.UUID(public_id)
    assert clicks.buffer.flush() == 1 and Click.objects.count() == 1


def test_it_writes_a_buffered_click_after_all_when_the_sign_up_naming_it_is_refused(buffered):
    alice = signup("alice")
    client = Client()
    client.get("/", {"ref": alice.referral_code})
    public_id = remembered(client)["click"]
    # Refused after the click was written inside its transaction: the write is rolled back with it.
    result = ingest_event(event("account.created", "alice", email="x@example.com", click_id=public_id))
    assert result.status == "rejected"
    assert not Click.objects.exists()
    assert clicks.buffer.flush() == 1
    assert Click.objects.get().public_id == uuid.UUID(public_id), "still buffered, so not lost"


def test_it_accepts_unattributed_a_click_id_that_is_neither_a_row_id_nor_a_public_id(alice):
    # SPEC "Referral links": a bad click id never loses the account; the warning names the field.
    result = ingest_event(event("account.created", "bob", email="bob@example.com", click_id="not-a-click"))
    assert result.status == "accepted"
    assert [warning["field"] for warning in result.warnings] == ["click_id"]
    assert not Referral.objects.filter(referred__external_id="bob").exists()


def _pending(referrer, path: str = "/", user_agent: str = "Mozilla/5.0") -> clicks.PendingClick:
    return clicks.PendingClick(public_id=uuid.uuid4(), referrer_id=referrer.pk, visitor_id=uuid.uuid4().hex,
                               ip_hash="", user_agent=user_agent, path=path, template_id=None, is_unique=True,
                               created_at=timezone.now())


@pytest.mark.parametrize("poison", ["/a\x00b", "/a\ud800b"], ids=["nul", "lone_surrogate"])
def test_it_writes_the_good_clicks_around_one_whose_text_the_database_refuses(buffered, poison):
    """Issue 15.2: one click the database could not store (a NUL is a DataError on PostgreSQL, a
    lone surrogate cannot be encoded at all) failed its whole batch, which was retried forever."""
    alice = signup("alice")
    good = [_pending(alice, path=f"/page-{n}") for n in range(4)]
    # Straight into the buffer, past `record_click`'s cleaning: what the writer itself must survive.
    for click in [*good[:2], _pending(alice, path=poison), *good[2:]]:
        clicks.buffer.add(click)
    clicks.buffer.flush()
    stored = set(Click.objects.values_list("public_id", flat=True))
    assert {click.public_id for click in good} <= stored, "every good click is written"
    assert len(stored) in (4, 5)  # SQLite can store a NUL; PostgreSQL refuses it: then it is dropped
    assert len(clicks.buffer) == 0, "nothing is left to be retried forever"
    Client().get("/", {"ref": alice.referral_code})
    clicks.buffer.flush()
    assert Click.objects.count() == len(stored) + 1, "the writer goes on writing"


def test_it_records_clicks_whose_request_holds_nul_bytes_and_the_ones_around_them(buffered):
    alice = signup("alice")
    set_writer(buffered, CLICKS_PER_IP_PER_MINUTE=0)
    assert Client().get("/", {"ref": alice.referral_code}).status_code == 302
    hostile = Client().get("/", {"ref": alice.referral_code}, HTTP_USER_AGENT="Mozilla\x00\ud800/5.0")
    assert hostile.status_code == 302
    assert Client().get(f"/%00?ref={alice.referral_code}").status_code == 404  # no page has such a path
    assert Client().get("/", {"ref": alice.referral_code}).status_code == 302
    clicks.buffer.flush()
    assert sorted(Click.objects.values_list("user_agent", flat=True)) == ["", "", "Mozilla\ufffd\ufffd/5.0"]
    assert len(clicks.buffer) == 0


def test_it_neither_loses_nor_doubles_clicks_under_concurrent_requests(buffered):
    alice = signup("alice")
    push(event("template.published", "alice", template="sd-webui"))
    # Every visitor comes from 127.0.0.1 here: no per-IP limit, or only 30 clicks would count.
    set_writer(buffered, CLICK_FLUSH_INTERVAL_MS=20, CLICK_FLUSH_BATCH=7, CLICKS_PER_IP_PER_MINUTE=0)
    Client().get("/", {"ref": alice.referral_code})  # code cached: the requests below need no database
    Client().get("/t/sd-webui", {"ref": alice.referral_code})
    threads, per_thread, failures = 8, 25, []

    def visitor(n):
        client = Client()
        client.cookies["vid"] = f"{n % 4:032x}"  # 4 visitors, each on two threads at once
        try:
            for i in range(per_thread):
                path = "/t/sd-webui" if i % 5 == 0 else "/"
                response = client.get(path, {"ref": alice.referral_code})
                assert response.status_code == 302
        except Exception as exc:  # reported below: an assert in a thread does not fail the test
            failures.append(exc)

    workers = [threading.Thread(target=visitor, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    clicks.buffer.stop()
    expected = threads * per_thread + 2
    assert Click.objects.count() == expected
    assert Click.objects.values("public_id").distinct().count() == expected
    assert Click.objects.filter(is_unique=True).count() == 4 + 2, "one unique click per visitor (+ the warm-up's 2)"
    template = Template.objects.get()
    assert Click.objects.filter(template=template).count() == threads * 5 + 1


# --------------------------------------------------------------------------- a real server's shutdown


@pytest.mark.parametrize("preload", [False, True], ids=["workers-load-the-app", "preloaded-app-forked"])
def test_it_writes_buffered_clicks_when_a_gunicorn_worker_is_stopped(tmp_path, preload):
    database = tmp_path / "clicks.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "referrals_site.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "REFERRAL_CLICK_WRITE": "buffered",
        "REFERRAL_CLICK_FLUSH_INTERVAL_MS": "600000",
        "REFERRAL_CLICK_FLUSH_BATCH": "100000",
        "REFERRAL_CLICKS_PER_IP_PER_MINUTE": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    code = subprocess.run(
        [
            python,
            "-c",
            "import django; django.setup(); from django.utils import timezone; "
            "from referrals.models import Account; print(Account.objects.create(external_id='alice', "
            "signed_up_at=timezone.now()).referral_code)",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(python).parent / "gunicorn"),
            "referrals_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--log-level",
            "warning",
            *(["--preload"] if preload else []),
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: _answers(port), timeout=60), "gunicorn did not start"
        for _ in range(20):
            conn = HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/?ref={code}", headers={"User-Agent": "Mozilla/5.0 (test)"})
            response = conn.getresponse()
            assert response.status == 302 and "ref=" in response.getheader("Set-Cookie", "")
            conn.close()
        assert _click_rows(database) == 0, "the 10-minute timer has not written them"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert _click_rows(database) == 20, "every worker wrote its buffer on the way out"



def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except OSError:
        return False


def _click_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT COUNT(*) FROM referrals_click").fetchone()[0]
