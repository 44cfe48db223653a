"""The tests' side of the fake providers: fixtures that serve payouts/fakes/ on a port of their
own, and the fake Stripe extended with billing objects (stripe_billing.py)."""
