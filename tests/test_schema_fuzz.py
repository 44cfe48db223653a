"""schemathesis against the live OpenAPI schema, through the Django WSGI app: every operation,
with schema-conforming and schema-violating data. No response may be a server error or break
the schema (status codes, content types, bodies, headers). Bounded so it stays fast in CI."""
import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from referrals.api.keys import api_key_create
from referrals.engine.jobs import run_jobs
from tests.helpers import at, buy_plan, event, push, signup, spend

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def api_schema(db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1000000/minute"}}
    cache.clear()
    # Requests go straight to the WSGI app, whose request signals would close the test's
    # connection (and its transaction) after each one; Django's own test client does the same.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        loaded = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
        loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                        max_examples=EXAMPLES_PER_OPERATION)
        yield loaded
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def world(api_schema, runpod):
    """The accounts, template and application the schema's examples name ("42", "comfy", 1)."""
    owner = signup("42", when=at(0))
    push(event("template.published", "42", when=at(0), template="comfy", name="ComfyUI"))
    for i in range(3):
        signup(f"r{i}", code=owner.referral_code, when=at(1))
        spend(f"r{i}", "200.00", when=at(2), template="comfy", runtime_seconds=3600)
    buy_plan("r0", "20.00", when=at(2))
    run_jobs(at=at(3))
    return {"Authorization": f"Bearer {api_key_create(name='fuzz', scopes=['events:write', 'read', 'staff'])[1]}"}


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_it_never_answers_a_server_error_nor_breaks_its_schema(case, world):
    case.call_and_validate(headers=world, checks=CHECKS)
