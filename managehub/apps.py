from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """django.contrib.admin, with managehub.admin.AdminSite as `admin.site` (Django's documented way)."""

    default_site = "managehub.admin.AdminSite"

    def ready(self):
        super().ready()  # autodiscover: every app's admin is registered now
        from managehub.admin import drop_token_admin

        drop_token_admin()
