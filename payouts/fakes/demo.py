"""The demo's payout providers: the fakes of this package mounted on the portal's own dev server
under /payouts/dev/fake-<provider>/, so `make run`'s payouts complete through every method
(Stripe Connect through the real SDK, PayPal and Wise through httpx) and never reach a real host.

Mounted only when settings.DEBUG and PAYOUT_DEMO_FAKES are both on (payouts/urls.py); the
settings then point STRIPE_API_BASE, PAYPAL_API_BASE and WISE_API_BASE here. The fakes settle at
once (PayPal's batch, Wise's funded transfer); Stripe's transfers are synchronous anyway.

Their state lives in the dev server's memory, so after a restart they start from the database:
Stripe knows every connected account a portal account holds (able to receive transfers once its
onboarding was finished), and Wise knows every recipient a portal account saved (in the demo the
number typed on the payouts page stands for a recipient made at Wise)."""
import threading

from django.conf import settings
from django.http import HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ..models import MethodType, PayoutMethod
from .paypal import FakePayPal
from .server import FakeServer
from .stripe import FakeStripe
from .wise import FakeWise

PREFIX = "/payouts/dev/fake-"
_lock = threading.Lock()
_fakes: dict[str, FakeServer] = {}


class SavedRecipients:
    """The recipients Wise knows in the demo: those saved on a portal account's Wise method."""

    def __contains__(self, recipient) -> bool:
        return PayoutMethod.objects.filter(type=MethodType.WISE, details__recipient=str(recipient)).exists()


def _create(provider: str, base_url: str) -> FakeServer:
    if provider == "stripe":
        fake = FakeStripe(secret_key=settings.STRIPE_SECRET_KEY, base_url=base_url)
        for method in PayoutMethod.objects.filter(type=MethodType.STRIPE).exclude(details__connected_account=""):
            fake.add_account(method.stripe_account_id, transfers="active" if method.ready else "inactive")
        return fake
    if provider == "paypal":
        return FakePayPal(client_id=settings.PAYPAL_CLIENT_ID, client_secret=settings.PAYPAL_CLIENT_SECRET,
                          settle_at_once=True, base_url=base_url)
    fake = FakeWise(token=settings.WISE_API_TOKEN, settle_at_once=True, base_url=base_url)
    fake.recipients = SavedRecipients()
    return fake


def fake(provider: str, *, base_url: str = "") -> FakeServer:
    """The one fake of a provider in this process, created at its first call."""
    with _lock:
        if provider not in _fakes:
            _fakes[provider] = _create(provider, base_url)
        return _fakes[provider]


def reset() -> None:
    """Forget the fakes (tests: the next call starts again from the database)."""
    with _lock:
        _fakes.clear()


@csrf_exempt
def serve(request, provider: str, path: str):
    base_url = request.build_absolute_uri(f"{PREFIX}{provider}")
    headers = {name.lower(): value for name, value in request.headers.items()}
    status, payload = fake(provider, base_url=base_url).answer(
        request.method, f"/{path}", request.GET.dict(), headers, request.body)
    if 300 <= status < 400:
        return HttpResponseRedirect(payload["location"])
    return JsonResponse(payload, status=status)
