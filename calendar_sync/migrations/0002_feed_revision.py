from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("calendar_sync", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="calendarfeed",
            name="content_hash",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="calendarfeed",
            name="content_changed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
