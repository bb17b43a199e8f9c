import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("calendar_sync", "0002_feed_revision"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(model_name="calendartoken", name="provider", field=models.CharField(max_length=32)),
        migrations.AlterField(model_name="oauthstate", name="provider", field=models.CharField(max_length=32)),
        migrations.AddField(
            model_name="syncrecord", name="remote_id", field=models.CharField(blank=True, default="", max_length=1024)
        ),
        migrations.CreateModel(
            name="AccessLog",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("provider", models.CharField(max_length=32)),
                (
                    "operation",
                    models.CharField(
                        choices=[
                            ("refresh", "Refresh access token"),
                            ("revoke", "Revoke grant"),
                            ("list_calendars", "List calendars"),
                            ("create_event", "Create event"),
                            ("update_event", "Update event"),
                            ("delete_event", "Delete event"),
                            ("batch", "Batch of event writes"),
                        ],
                        max_length=32,
                    ),
                ),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("confirmed", "Booking confirmed"),
                            ("rescheduled", "Booking changed"),
                            ("cancelled", "Booking cancelled"),
                            ("backfill", "Backfill after connecting"),
                            ("resync", "Resync"),
                            ("calendar_change", "Calendar change"),
                            ("member_request", "Member request"),
                        ],
                        max_length=32,
                    ),
                ),
                ("outcome", models.CharField(default="ok", max_length=64)),
                ("object_ref", models.CharField(blank=True, max_length=140)),
                ("count", models.PositiveIntegerField(default=1)),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                (
                    "user",
                    models.ForeignKey(
                        null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "verbose_name": "calendar access log entry",
                "verbose_name_plural": "calendar access log",
                "ordering": ["-created_at", "-id"],
                "indexes": [models.Index(fields=["user", "-created_at"], name="calendar_sy_user_id_8a1f2c_idx")],
            },
        ),
    ]
