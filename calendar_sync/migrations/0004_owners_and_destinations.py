"""Connections get an owner (a member or a host object); sync records a destination."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def owners_from_users(apps, schema_editor):
    CalendarToken = apps.get_model("calendar_sync", "CalendarToken")
    SyncRecord = apps.get_model("calendar_sync", "SyncRecord")
    OAuthState = apps.get_model("calendar_sync", "OAuthState")
    for token in CalendarToken.objects.all().only("pk", "user_id"):
        CalendarToken.objects.filter(pk=token.pk).update(owner_id=str(token.user_id))
    for state in OAuthState.objects.all().only("pk", "user_id"):
        OAuthState.objects.filter(pk=state.pk).update(owner_id=str(state.user_id))
    for record in SyncRecord.objects.exclude(user_id=None).only("pk", "user_id"):
        SyncRecord.objects.filter(pk=record.pk).update(owner_id=str(record.user_id))


class Migration(migrations.Migration):

    dependencies = [
        ("calendar_sync", "0003_access_log_remote_id"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="calendartoken", name="user",
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="calendar_token", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(model_name="calendartoken", name="owner_kind", field=models.CharField(default="user", max_length=32)),
        migrations.AddField(model_name="calendartoken", name="owner_id", field=models.CharField(default="", max_length=64), preserve_default=False),
        migrations.AddField(
            model_name="calendartoken", name="connected_by",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(model_name="accesslog", name="owner", field=models.CharField(blank=True, max_length=100)),
        migrations.AddField(model_name="oauthstate", name="owner_kind", field=models.CharField(default="user", max_length=32)),
        migrations.AddField(model_name="oauthstate", name="owner_id", field=models.CharField(blank=True, max_length=64)),
        migrations.AddField(model_name="syncrecord", name="destination", field=models.CharField(default="member", max_length=32)),
        migrations.AddField(model_name="syncrecord", name="owner_kind", field=models.CharField(default="user", max_length=32)),
        migrations.AddField(model_name="syncrecord", name="owner_id", field=models.CharField(default="", max_length=64), preserve_default=False),
        migrations.RunPython(owners_from_users, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="syncrecord", name="calendar_sync_record_unique"),
        migrations.RemoveIndex(model_name="syncrecord", name="calendar_sy_user_id_c8a59d_idx"),
        migrations.RemoveField(model_name="syncrecord", name="user"),
        migrations.AddConstraint(
            model_name="syncrecord",
            constraint=models.UniqueConstraint(fields=("source", "object_id", "destination"), name="calendar_sync_record_unique"),
        ),
        migrations.AddIndex(model_name="syncrecord", index=models.Index(fields=["owner_kind", "owner_id", "state"], name="calendar_sync_owner_state_idx")),
        migrations.AddConstraint(
            model_name="calendartoken",
            constraint=models.UniqueConstraint(fields=("owner_kind", "owner_id"), name="calendar_sync_token_owner_unique"),
        ),
    ]
