"""WSGI entry point: ``gunicorn tracker_api.wsgi:application``.

Settings come from :func:`tracker.configure` (TRACKER_HOME, TRACKER_DATABASE_URL, ...), not
from a settings module.
"""

import tracker

tracker.configure(quiet=True)

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
