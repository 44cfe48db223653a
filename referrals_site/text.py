"""Text from outside, checked once for every entry point (SPEC "Bad input").

NUL bytes cannot be stored by PostgreSQL, lone surrogates cannot be encoded as UTF-8 (neither
by the database driver nor by a JSON or HTML response), and other control characters have no
business in ids, codes or URLs. `text_problem` and `json_text_problem` say what is wrong and
where; `safe_text` makes a value that is only recorded, never answered (a click's path or user
agent), storable. `BadTextMiddleware` applies the check to every request's path, query string
and form body; the API's JSON parser and event validation apply it to JSON bodies.
"""
import re

from django.http import Http404, HttpResponseBadRequest, JsonResponse

# Multi-line text (a reason, a form field) may hold tabs and line breaks; nothing else below 0x20.
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# One-line text (a URL path, an id) holds no control character at all.
_BAD_IN_LINE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def text_problem(value: str, *, one_line: bool = False) -> str | None:
    """Why this text is refused, in words, or None when it is fine."""
    found = (_BAD_IN_LINE if one_line else _BAD).search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "must not contain NUL bytes (\\u0000)"
    if "\ud800" <= char <= "\udfff":
        return f"must not contain a lone surrogate (\\u{ord(char):04x}); send valid Unicode text"
    return f"must not contain control characters (\\u{ord(char):04x})"


def json_text_problem(value, path: str = "") -> tuple[str, str] | None:
    """The first string (value or object key) of parsed JSON that `text_problem` refuses, as
    (its path, e.g. "events.2.email", the reason); None when all text is fine.

    Python's json module accepts "\\ud800" and "\\u0000", so this runs after parsing. A loop over
    an explicit stack, not recursion: parsed JSON can be as deep as the parser allowed. Clean
    text (nearly every request) is walked once without building any path; only a document
    with a problem is walked again to name where it is."""
    if _all_text_fine(value):
        return None
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if reason := text_problem(item):
                return where or "body", reason
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                inner = f"{where}.{safe_name(key)}" if where else safe_name(key)
                if reason := text_problem(key, one_line=True):
                    return inner, f"(the field's name) {reason}"
                children.append((inner, child))
            stack.extend(reversed(children))  # report the first problem in document order
        elif isinstance(item, list):
            stack.extend(reversed([(f"{where}.{index}" if where else str(index), child)
                                   for index, child in enumerate(item)]))
    return None


def _all_text_fine(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD.search(item):
                return False
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _BAD_IN_LINE.search(key):
                    return False
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return True


def safe_name(name: str) -> str:
    """A field name fit to be shown back in an error: refused characters written as \\uXXXX."""
    return _BAD_IN_LINE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)


def safe_text(value: str) -> str:
    """The text with every refused character replaced by U+FFFD (for values recorded as they came)."""
    return _BAD.sub("\ufffd", value)


class BadTextMiddleware:
    """Refuses a request whose URL path (404), query string or form body (400) holds text that
    `text_problem` refuses, before any view or query sees it. Under /api/ the answer is in the
    API's error shape; elsewhere a short plain-text page naming the parameter."""

    FORM_TYPE = "application/x-www-form-urlencoded"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = request.path_info.startswith("/api/")
        if text_problem(request.path_info, one_line=True):
            if api:
                return _api_error(404, "not_found", "no such endpoint or object (the path holds characters "
                                                    "that no id can contain)")
            raise Http404("the path holds characters that no page's address can contain")
        # Only url-encoded bodies: parsing them keeps `request.body` readable. Multipart bodies are
        # decoded by Django with errors replaced, and its form fields refuse NUL themselves. Not
        # under /api/: the API reads every body as JSON (`curl -d` labels it url-encoded) and its
        # parser checks the text itself.
        sources = [("query parameter", request.GET)]
        if request.method == "POST" and request.content_type == self.FORM_TYPE and not api:
            sources.append(("form field", request.POST))
        for kind, params in sources:
            for name, values in params.lists():
                for value in (name, *values):
                    if reason := text_problem(value):
                        field = safe_name(name)
                        if api:
                            return _api_error(400, "invalid", f"{field}: {reason}", {field: reason})
                        return HttpResponseBadRequest(f"The {kind} {field!r} {reason}.\n",
                                                      content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def _api_error(status: int, code: str, message: str, fields: dict | None = None) -> JsonResponse:
    # The shape of referrals.api.errors.error_body (this module sits below the apps).
    return JsonResponse({"error": {"code": code, "message": message, "fields": fields or {}}}, status=status)

