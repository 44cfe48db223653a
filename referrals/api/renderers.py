"""The API's JSON renderer (a module of its own: DRF imports it while APIView is being imported)."""
from rest_framework.renderers import JSONRenderer


class JsonRenderer(JSONRenderer):
    """DRF's JSON renderer, except that an answer echoing a lone surrogate from the input (the id
    of a rejected event) is written with \\uXXXX escapes instead of failing to encode (a 500)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return _ASCII_RENDERER.render(data, accepted_media_type, renderer_context)


class _AsciiJsonRenderer(JSONRenderer):
    ensure_ascii = True


_ASCII_RENDERER = _AsciiJsonRenderer()
