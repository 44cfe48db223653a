"""WSGI entry point (gunicorn referrals_site.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")
application = get_wsgi_application()
