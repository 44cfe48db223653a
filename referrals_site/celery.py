"""The Celery app: settings from Django's under the `CELERY_` namespace, tasks from each app's
`tasks` module, schedules from the database (django-celery-beat) so staff edit them in the admin.

Two modes (see README "Periodic jobs"):
- with `REDIS_URL` (production, `make worker` / `make beat`): Redis is the broker; tasks are
  acknowledged after they finish (`acks_late`), so a worker that dies mid-task leaves the
  message to be delivered again, and the jobs are idempotent.
- without it (`make run`, tests): embedded. Tasks run eagerly in the process that queues them,
  and `make run` starts `celery beat` next to the web server, which runs each due job inline.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

app = Celery("referrals_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
