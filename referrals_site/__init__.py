# The Celery app is loaded with Django, so `shared_task`s bind to it and `on_commit` queues work.
from .celery import app as celery_app

__all__ = ("celery_app",)
