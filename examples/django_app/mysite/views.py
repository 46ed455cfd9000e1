from django.conf import settings
from django.http import HttpRequest, HttpResponse

from zipware.contrib.django import ManifestResponse


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse('<a href="/download">Download the samples (ZIP)</a>')


def download(request: HttpRequest) -> ManifestResponse:
    # The view only lists what goes in; the middleware in wsgi.py / asgi.py sizes the archive
    # and streams it, so this works the same under gunicorn and under uvicorn.
    root = settings.ZIPWARE_ROOTS[0]
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return ManifestResponse(
        [
            *({"name": n, "path": n} for n in names),  # `path` is relative to the first root
            {"name": "notes.txt", "text": "Écrit par l'exemple Django.\n"},
            {"name": "empty/"},  # a trailing '/' makes a directory: empty ones survive
        ],
        # Not ASCII: sent as filename*=UTF-8''... with an ASCII fallback for old clients
        filename="échantillons.zip",
    )
