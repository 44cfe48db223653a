"""The portal's URLs plus the demo's fake providers, as `make run` (DEBUG) mounts them, for tests/test_demo.py."""
from django.urls import re_path

from payouts.fakes import demo
from referrals_site.urls import urlpatterns as portal

urlpatterns = [
    re_path(r"^payouts/dev/fake-(?P<provider>stripe|paypal|wise)/(?P<path>.+)$", demo.serve),
    *portal,
]
