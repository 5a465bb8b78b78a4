"""WSGI entry point: ``gunicorn tracker_api.wsgi:application``.

Settings come from :func:`tracker.configure` (TRACKER_HOME, TRACKER_DATABASE_URL, ...) unless a
host project configured Django already.
"""

from tracker_api.server import configure_from_environment

configure_from_environment(persistent_connections=True)

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
