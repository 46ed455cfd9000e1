"""ASGI entry point: `uvicorn mysite.asgi:application` (from examples/django_app)."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from zipware.asgi import ZipMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

# Around the whole Django app, outside Django's own middleware: it must see the manifest
# response as the view made it, and nothing of Django's (GZip...) may touch the ZIP.
application = ZipMiddleware(get_asgi_application(), roots=settings.ZIPWARE_ROOTS)
