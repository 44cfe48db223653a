"""The API's plumbing: the base view, body parsing, money fields, strict inputs, pagination."""
import json
from base64 import b64decode
from urllib import parse

from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.views import APIView

from ledger.money import format_cents, format_exact
from referrals_site.text import json_text_problem

from .auth import ApiKeyAuthentication, ApiKeyThrottle, ScopePermission
from .errors import BodyTooLarge

MAX_BODY_BYTES = 4 * 1024 * 1024  # 1000 events of about 1 KB each, with room to spare
MAX_DB_INT = 2**63 - 1


class JsonBodyParser(BaseParser):
    """Parses every body as JSON, whatever its Content-Type: a body that is not JSON is a 400
    naming `body`, never a 415 or a 500 (deep nesting included). Text holding NUL bytes, lone
    surrogates or control characters is a 400 naming its JSON path (`referrals_site.text`),
    except where the view checks it per item (`ApiView.text_checked_per_item`: the events of a
    batch are rejected one by one)."""

    media_type = "*/*"
    max_bytes = MAX_BODY_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            mb = self.max_bytes // (1024 * 1024)
            size = f"{mb} MB" if mb else f"{self.max_bytes // 1024} KB"
            raise BodyTooLarge(f"the body is larger than {size}")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise exceptions.ParseError("the body is not UTF-8")
        except RecursionError:
            raise exceptions.ParseError("the body is nested too deeply")
        except ValueError as exc:
            raise exceptions.ParseError(str(exc))
        view = (parser_context or {}).get("view")
        if not getattr(view, "text_checked_per_item", False) and (problem := json_text_problem(data)):
            path, reason = problem
            raise exceptions.ValidationError({path: reason})
        return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class ApiView(APIView):
    text_checked_per_item = False
    authentication_classes = [ApiKeyAuthentication]
    throttle_classes = [ApiKeyThrottle]
    parser_classes = [JsonBodyParser]
    permission_classes = [ScopePermission]  # closed until an endpoint names its scope


class StrictInput(serializers.Serializer):
    """An input serializer that refuses fields it does not know (a typo must not be ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = {name: "is not a field of this request" for name in data if name not in self.fields}
            if unknown:
                raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "example": "40.00"})
class CentsField(serializers.Field):
    """Ledger units shown as a decimal string of whole cents (rounded towards zero)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return format_cents(value)


@extend_schema_field({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "example": "18.144"})
class ExactMoneyField(CentsField):
    """Ledger units shown exactly, sub-cent digits kept ("18.144")."""

    def to_representation(self, value):
        return format_exact(value)


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 50

    def decode_cursor(self, request):
        # DRF answers a garbled cursor with 404 and lets a forged position reach the query
        # (a 500); both are bad input, answered as 400 naming the parameter.
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            tokens = parse.parse_qs(b64decode(encoded.encode("ascii")).decode("ascii"), keep_blank_values=True)
            position = tokens.get("p", [None])[0]
            if position is not None and not (position.isascii() and position.isdigit()
                                             and int(position) <= MAX_DB_INT):
                raise ValueError(position)
            return super().decode_cursor(request)
        except (TypeError, ValueError, UnicodeError, exceptions.NotFound):
            raise exceptions.ValidationError(
                {self.cursor_query_param: "is not a valid cursor; follow the next/previous links"})


def batch_items(body, *, noun: str, marker: str, limit: int) -> list:
    """The items of a body that is one object or a batch `{"<noun>s": [...]}` of up to `limit`
    (events, clicks); anything else is a 400 naming what is wrong. An object without a batch key
    is one item if it has its `marker` field ("type" of an event, "code" of a click)."""
    key = f"{noun}s"
    shape = f'send one {noun} object, or {{"{key}": [...]}}'
    if not isinstance(body, dict):
        raise exceptions.ValidationError({"body": f"must be a JSON object: {shape}"})
    if key in body:
        extra = {name: f"is not a field of a batch ({shape})" for name in body if name != key}
        if extra:
            raise exceptions.ValidationError(extra)
        items = body[key]
        if not isinstance(items, list):
            raise exceptions.ValidationError({key: f"must be a list of {noun} objects"})
        if len(items) > limit:
            raise exceptions.ValidationError(
                {key: f"at most {limit} {key} per batch (got {len(items)}); split the batch"})
        return items
    if marker not in body:
        article = "an" if noun[0] in "aeiou" else "a"
        raise exceptions.ValidationError(
            {"body": f'is neither {article} {noun} (no "{marker}") nor a batch: {shape}'})
    return [body]


def db_int(value: int) -> int:
    """A path id that fits the database's integer, or a 404 (SQLite raises on larger ones)."""
    if value > MAX_DB_INT:
        raise exceptions.NotFound()
    return value
