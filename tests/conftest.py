import os

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from hypothesis import settings as hypothesis_settings

from referrals.presets import load_preset

# `HYPOTHESIS_PROFILE=deep` (make test-deep): property tests run at least 1,000 examples each
# (tests.helpers.examples for those that set their own count).
hypothesis_settings.register_profile("deep", max_examples=1000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def runpod(db):
    return {p.kind: p for p, _ in load_preset("runpod")}


@pytest.fixture
def apimarket(db):
    return {p.kind: p for p, _ in load_preset("apimarket")}


@pytest.fixture
def vast(db):
    return {p.kind: p for p, _ in load_preset("vast")}


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("sam", "sam@operator.test", "pw-sam-12345", is_staff=True)


@pytest.fixture
def postgres_only(db):
    if connection.vendor != "postgresql":
        pytest.skip(reason="needs PostgreSQL: set DATABASE_URL (make test provisions it)")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Production hashes with scrypt (settings.PASSWORD_HASHERS); tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _login_throttling_off_by_default(settings):
    # The test client's login() authenticates without a request, which django-axes refuses;
    # tests/test_security.py switches it back on to prove the lock-out.
    settings.AXES_ENABLED = False


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Counters kept in the cache (per-IP click limit, API throttle) must not leak between tests.
    from django.core.cache import cache

    from referrals.attribution import clicks

    cache.clear()
    clicks.clear_local_cache()
    yield
    cache.clear()
    clicks.clear_local_cache()


@pytest.fixture(autouse=True)
def _clicks_written_in_the_request(settings):
    # Tests inside a rolled-back transaction cannot share their rows with the click writer's own
    # connection; tests/test_click_path.py runs the buffered writer for real (transactional tests).
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_WRITE": "direct"}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium for the browser tests (tests/test_browser.py, tests/test_admin_browser.py)."""
    # Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls from
    # it unless told that this (test-only) thread is not really async. Only while these tests
    # run: a leftover variable would fail `check --deploy` in later tests' subprocesses.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from tests.browser import CHROMIUM, CHROMIUM_ARGS, sync_api  # skips the module without Chromium

    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def stored_only(settings):
    """Requests store their events and leave applying them to the test."""
    settings.INGEST_INLINE_APPLY_MAX = 0


@pytest.fixture
def count_step_calls(monkeypatch):
    """`count_step_calls(event_type)`: the list (filled as they go) of the events of that type
    the engine applied through their step; the rest of them went set-based."""
    from referrals.engine import apply as engine

    def counting_calls(event_type: str) -> list[str]:
        calls: list[str] = []
        step = engine._STEPS[event_type]

        def counting(event, replay):
            calls.append(event.external_id)
            return step(event, replay)

        monkeypatch.setitem(engine._STEPS, event_type, counting)
        return calls

    return counting_calls
