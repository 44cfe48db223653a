"""The live OpenAPI 3 schema and its interactive docs: complete, described, self-hosted."""
import json

import pytest
from django.test import Client

from referrals.engine import events as ev


@pytest.fixture
def schema(db) -> dict:
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_it_serves_an_openapi_3_schema_with_every_contract_path(schema):
    assert schema["openapi"].startswith("3.")
    for path in ("/api/v1/events", "/api/v1/accounts/{account}", "/api/v1/accounts/{account}/stats",
                 "/api/v1/accounts/{account}/earnings", "/api/v1/accounts/{account}/referrals",
                 "/api/v1/templates/{template}", "/api/v1/applications",
                 "/api/v1/applications/{application_id}/approve",
                 "/api/v1/applications/{application_id}/reject", "/api/v1/accounts/{account}/track",
                 "/api/v1/jobs/run"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "rk_<prefix>_<secret>",
        "description": schema["components"]["securitySchemes"]["apiKey"]["description"]}


def _refs(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def test_it_describes_every_field(schema):
    operations = [op for item in schema["paths"].values() for op in item.values()]
    components = schema["components"]["schemas"]
    names = _refs(operations, set())
    while True:  # components referenced by components
        more = _refs([components[name] for name in names], set()) - names
        if not more:
            break
        names |= more
    undescribed = [f"{name}.{field}" for name in sorted(names)
                   for field, spec in components[name].get("properties", {}).items() if not spec.get("description")]
    assert len(names) > 20
    assert undescribed == []


def test_it_documents_errors_and_throttling_on_every_operation(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert {"401", "403", "429"} <= set(operation["responses"]), f"{method} {path}"
            assert operation.get("description") or operation.get("summary"), f"{method} {path}"


def test_it_has_a_request_example_for_each_event_type(schema):
    examples = schema["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    types = {example["value"].get("type") for example in examples.values()}
    assert set(ev.EXTERNAL_TYPES) <= types
    assert any("events" in example["value"] for example in examples.values())


def test_it_serves_swagger_ui_from_local_static_files(db):
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
