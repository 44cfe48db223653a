"""The shared HTTP client for the REST providers (PayPal, Wise): httpx with timeouts."""
import httpx

from .base import ProviderError, timeout


def request(method: str, url: str, *, provider: str, **kwargs) -> httpx.Response:
    """One call; transport failures (timeouts, dropped connections) become retryable errors."""
    try:
        with httpx.Client(timeout=timeout()) as http:
            return http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderError(f"{provider}: no answer within {timeout():g}s ({type(exc).__name__})", retryable=True)
    except httpx.TransportError as exc:
        raise ProviderError(f"{provider}: connection failed ({type(exc).__name__}: {exc})", retryable=True)


def check(response: httpx.Response, *, provider: str) -> dict:
    """The JSON body of a 2xx; a ProviderError otherwise (retryable for 5xx, 429 and 401)."""
    if response.is_success:
        return response.json() if response.content else {}
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("message") or body.get("error_description") or body.get("name") or response.text[:200]
    retryable = response.status_code >= 500 or response.status_code in (401, 408, 409, 429)
    raise ProviderError(f"{provider}: HTTP {response.status_code}: {detail}", retryable=retryable)
