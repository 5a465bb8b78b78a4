#!/usr/bin/env python
"""Django's command line for a tracker home: `python manage.py tracker_doctor`, `runserver`, ...

Settings come from tracker.configure() (TRACKER_HOME / TRACKER_DATABASE_URL), not a settings file.
"""

import sys

_NO_AUTO_MIGRATE = {"makemigrations", "migrate", "sqlmigrate", "showmigrations", "squashmigrations"}


def main() -> None:
    import tracker

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    tracker.configure(migrate=command not in _NO_AUTO_MIGRATE)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
