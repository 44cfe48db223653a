"""Payout methods and payouts (built out in the payouts issue)."""
