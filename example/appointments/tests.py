from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import TestCase
from django.utils import timezone

from calendar_sync.testing import FakeGoogle, connect, use_fakes

from .models import Appointment

ACCOUNT = "member@example.com"  # the fake Google's default account


class AppointmentCalendarTests(TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.google = cls.enterClassContext(FakeGoogle())  # a real HTTP server on 127.0.0.1

    def setUp(self):
        self.google.reset()
        self.enterContext(use_fakes(self.google))  # CALENDAR_SYNC pointed at the fake (and DEBUG on)
        self.user = get_user_model().objects.create_user("alice", password="pw")
        self.client.force_login(self.user)
        with self.captureOnCommitCallbacks(execute=True):
            response = connect(self.client, self.google)  # the member consents on the fake
        self.assertIn("calendar_sync=connected", response["Location"])

    def test_create_then_cancel(self):
        start = timezone.now() + timedelta(days=1)
        # The sync is enqueued on commit: TestCase never commits, so run the callbacks here.
        with self.captureOnCommitCallbacks(execute=True):
            appointment = Appointment.objects.create(
                owner=self.user, title="Dentist", start=start, end=start + timedelta(hours=1)
            )
        appointment.refresh_from_db()
        events = self.google.events(ACCOUNT)
        self.assertEqual([event["summary"] for event in events.values()], ["Dentist"])
        self.assertIn(appointment.calendar_event_id, events)

        appointment.cancelled = True
        with self.captureOnCommitCallbacks(execute=True):
            appointment.save()  # save(), not queryset.update(): update() sends no signal, so no sync
        appointment.refresh_from_db()
        self.assertEqual(self.google.events(ACCOUNT), {})
        self.assertEqual(appointment.calendar_event_id, "")


class AnonymousTests(TestCase):
    """The app's endpoints need a signed-in member whatever REST_FRAMEWORK's defaults say (here DRF's AllowAny)."""

    def test_every_member_endpoint_answers_401(self):
        endpoints = [
            ("get", "status"),
            ("get", "calendars"),
            ("put", "calendar"),
            ("delete", "disconnect"),
            ("post", "test"),
            ("get", "auth/google"),
            ("get", "busy"),
            ("get", "activity"),
            ("get", "ical"),
            ("post", "ical"),
            ("delete", "ical"),
            ("post", "ical/rotate"),
            ("get", "shared/"),
            ("get", "shared/room/1/status"),
        ]
        for method, path in endpoints:
            with self.subTest(f"{method.upper()} {path}"):
                response = getattr(self.client, method)(f"/api/calendar-sync/{path}")
                self.assertEqual(response.status_code, 401)
                self.assertIn("WWW-Authenticate", response)
                self.assertEqual(response.json()["code"], "not_authenticated")
