"""Settings for benchmarks: the portal's own settings plus a bare view to compare against."""

import os

from referrals_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bench_urls"
DEBUG = False
ALLOWED_HOSTS = ["*"]
# The load comes from one IP: without this every click after the 30th a minute would be refused
# by the per-IP limit and the benchmark would measure a cheaper path than real traffic takes.
REFERRAL = {**REFERRAL, "CLICKS_PER_IP_PER_MINUTE": 0}  # noqa: F405
LOGGING = {"version": 1, "disable_existing_loggers": True, "root": {"level": "WARNING", "handlers": []}}
if os.environ.get("BENCH_REFERRAL_MIDDLEWARE_LAST"):
    # For comparison: the referral middleware where it was before issue 9, after every other one
    # but django-axes, so a click pays for the session, CSRF, auth and messages middleware too.
    MIDDLEWARE = [m for m in MIDDLEWARE if m != "referrals.attribution.middleware.ReferralLinkMiddleware"]  # noqa: F405
    MIDDLEWARE.insert(MIDDLEWARE.index("axes.middleware.AxesMiddleware"),
                      "referrals.attribution.middleware.ReferralLinkMiddleware")
