from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("calendar_sync", "0007_oauth_browser_binding"),
    ]

    operations = [
        migrations.AddField(
            model_name="calendartoken",
            name="paused_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
