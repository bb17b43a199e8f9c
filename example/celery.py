"""mysite/celery.py: the Celery app, for hosts that run a worker and beat (SYNC_MODE "celery", the default).

In settings.py: CELERY_BROKER_URL (e.g. "redis://127.0.0.1:6379/0" or "amqp://guest:guest@host:5672//")
and CELERY_BEAT_SCHEDULE = beat_schedule(); in mysite/__init__.py: `from .celery import app as celery_app`.

    celery -A mysite worker -Q calendar_sync,calendar_sync.bulk -l info     # the syncs (both queues)
    celery -A mysite beat -l info       # exactly one in the whole deployment
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
