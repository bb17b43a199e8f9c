from django.conf import settings
from django.db import models


class Appointment(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
    start = models.DateTimeField()
    end = models.DateTimeField()
    cancelled = models.BooleanField(default=False)
    # The event in the owner's calendar ("" while there is none); written by calendar_sync.
    calendar_event_id = models.CharField(max_length=1024, blank=True, default="", editable=False)
