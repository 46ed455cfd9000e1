"""The least Django needs to serve two views: no database, no apps, no templates."""

import os
from importlib.resources import files
from pathlib import Path

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"  # what `manage.py runserver` serves

# Our own setting: the folders manifests may take files from (wsgi.py and asgi.py pass it
# to ZipMiddleware; a relative `path` in a manifest is relative to the first one).
ZIPWARE_ROOTS = [Path(str(files("zipware") / "samples"))]
