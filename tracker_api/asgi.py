"""ASGI entry point: ``uvicorn tracker_api.asgi:application``.

Settings come from :func:`tracker.configure` (TRACKER_HOME, TRACKER_DATABASE_URL, ...) unless a
host project configured Django already. The app is wrapped so that a body bigger than the
largest limit is refused with 413 while it arrives, even without a Content-Length (Django's
ASGI handler would otherwise spool all of it to disk before any view runs).
"""

from tracker_api.server import configure_from_environment

configure_from_environment()

from django.core.asgi import get_asgi_application  # noqa: E402

from tracker_api.streaming import BodyLimit  # noqa: E402

application = BodyLimit(get_asgi_application())
