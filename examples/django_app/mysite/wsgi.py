"""WSGI entry point: `gunicorn mysite.wsgi` (from examples/django_app)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from zipware.wsgi import ZipMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

# Around the whole Django app, outside Django's own middleware: it must see the manifest
# response as the view made it, and nothing of Django's (GZip...) may touch the ZIP.
application = ZipMiddleware(get_wsgi_application(), roots=settings.ZIPWARE_ROOTS)
