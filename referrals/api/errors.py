"""One error shape for every API failure: {"error": {"code", "message", "fields"}}."""
import logging

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from ..engine.services import ActionRefused

log = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "action_refused"
    default_detail = "this action is not allowed in the current state"


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"
    default_detail = "the request body is too large"


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc, context):
    if isinstance(exc, ActionRefused):
        exc = Conflict(str(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        # A bug, not bad input: log it with its traceback but still answer in the API's shape.
        log.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        set_rollback()
        return Response(error_body("server_error", "internal error; nothing was changed by the failing step"),
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    response.data = _describe(exc)
    return response


def _describe(exc: exceptions.APIException) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten(exc.detail)
        message = "; ".join(f"{name}: {text}" for name, text in fields.items()) or "invalid input"
        return error_body("invalid", message, fields)
    if isinstance(exc, exceptions.ParseError):
        detail = str(exc.detail)
        return error_body("invalid_json", f"the body is not valid JSON ({detail})", {"body": detail})
    if isinstance(exc, BodyTooLarge):
        return error_body(exc.default_code, str(exc.detail), {"body": str(exc.detail)})
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return error_body(code, str(exc.detail))


def flatten(detail, prefix: str = "") -> dict[str, str]:
    """DRF's nested error lists and dicts as {"field" or "field.sub": "message; message"}."""
    if isinstance(detail, dict):
        out: dict[str, str] = {}
        for name, sub in detail.items():
            name = "body" if name == "non_field_errors" and not prefix else str(name)
            out.update(flatten(sub, f"{prefix}.{name}" if prefix else name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "body": "; ".join(str(item) for item in detail)}
        out = {}
        for index, sub in enumerate(detail):
            if sub:
                out.update(flatten(sub, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix or "body": str(detail)}
