"""Create demo data (idempotent): a staff admin, a member and two workspaces; print the logins."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from bookings.models import Booking, Workspace

MEMBER = ("demo", "demo-password")
ADMIN = ("admin", "admin-password")


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        User = get_user_model()
        member, created = User.objects.get_or_create(username=MEMBER[0], defaults={"email": "demo@example.com"})
        if created:
            member.set_password(MEMBER[1])
            member.save()
        admin, created = User.objects.get_or_create(
            username=ADMIN[0], defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(ADMIN[1])
            admin.save()
        loft, _ = Workspace.objects.get_or_create(
            name="The Loft", defaults={"address": "1 Harbour St, Lisbon", "time_zone": "Europe/Lisbon"}
        )
        Workspace.objects.get_or_create(
            name="Quiet Room", defaults={"address": "1 Harbour St, Lisbon", "time_zone": "Europe/Lisbon"}
        )
        if not Booking.objects.filter(user=member).exists():
            start = (timezone.now() + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
            Booking.objects.create(
                user=member, workspace=loft, title="Deep work", start=start, end=start + timedelta(hours=3)
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo member: {MEMBER[0]} / {MEMBER[1]}    Staff admin: {ADMIN[0]} / {ADMIN[1]} (at /admin/)"
            )
        )
