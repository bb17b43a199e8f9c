import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "managehub.settings")
application = get_wsgi_application()

# Refuse to serve with errors the system checks find, deploy checks included (e.g. development keys in production).
from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

_errors = [str(e) for e in checks.run_checks(include_deployment_checks=True) if e.is_serious()]
if _errors:
    raise ImproperlyConfigured("Refusing to serve:\n" + "\n".join(_errors))
