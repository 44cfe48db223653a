"""Local fakes of the payout providers (Stripe, PayPal, Wise) speaking their HTTP APIs: the tests
serve each on a port of its own (tests/fakes/fixtures.py), `make run`'s demo mounts them on the dev
server (demo.py). Never used by production settings."""
