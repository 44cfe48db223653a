"""Payout providers behind one interface (`base.Provider`): Stripe Connect, PayPal Payouts, Wise."""
from .base import FAILED, PAID, PROCESSING, Provider, ProviderError, ProviderResult


def provider_for(method_type: str) -> Provider:
    from . import paypal, stripe, wise

    providers = {"stripe": stripe.StripeProvider, "paypal": paypal.PayPalProvider, "wise": wise.WiseProvider}
    return providers[method_type]()


__all__ = ["FAILED", "PAID", "PROCESSING", "Provider", "ProviderError", "ProviderResult", "provider_for"]
