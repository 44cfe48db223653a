"""Local fake provider servers (Stripe, PayPal, Wise) that the payout tests talk to over HTTP."""
