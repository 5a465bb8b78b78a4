"""Django settings a tracker server needs for its REST API; :func:`tracker.configure` applies them.

A host Django project that serves ``tracker_api.urls`` itself can do the same::

    from tracker_api.defaults import api_settings
    globals().update(api_settings())        # REST_FRAMEWORK, SPECTACULAR_SETTINGS, ...
    MIDDLEWARE.insert(0, "tracker_api.middleware.RequestSizeLimitMiddleware")
    MIDDLEWARE.insert(0, "tracker_api.fastpath.HotPostMiddleware")  # optional: faster hot POSTs
"""

from __future__ import annotations

from typing import Any

MIDDLEWARE = "tracker_api.middleware.RequestSizeLimitMiddleware"
#: First in the chain: a metric point or an annotation per request answered before the rest of
#: it (tracker_api.fastpath); optional.
HOT_MIDDLEWARE = "tracker_api.fastpath.HotPostMiddleware"


def api_settings() -> dict[str, Any]:
    """REST_FRAMEWORK, SPECTACULAR_SETTINGS and the upload limits, as a settings dict."""
    return {
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "tracker_api.authentication.TokenAuthentication",
                "tracker_api.authentication.SessionAuthentication",
            ],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
            "DEFAULT_PAGINATION_CLASS": "tracker_api.pagination.CursorPagination",
            "DEFAULT_FILTER_BACKENDS": [
                "django_filters.rest_framework.DjangoFilterBackend",
                "rest_framework.filters.OrderingFilter",
            ],
            "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
            "EXCEPTION_HANDLER": "tracker_api.exceptions.exception_handler",
            "DEFAULT_RENDERER_CLASSES": [
                "rest_framework.renderers.JSONRenderer",
                "rest_framework.renderers.BrowsableAPIRenderer",
            ],
            "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
        },
        "DATA_UPLOAD_MAX_MEMORY_SIZE": 64 * 1024 * 1024,
        # A server error's traceback goes to the server's stderr (Django's default only mails
        # it to ADMINS when DEBUG is off, which nobody configures for `tracker serve`).
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {
                # Propagates too, so pytest's caplog and host handlers still see it.
                "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": True},
            },
        },
        "SPECTACULAR_SETTINGS": {
            "TITLE": "tracker API",
            "DESCRIPTION": (
                "Experiment tracking, versioned datasets and annotation. Authenticate with "
                "`Authorization: Bearer <token>` (create one with `tracker token`) or a session "
                "cookie. Objects of projects you are not a member of answer 404."
            ),
            "VERSION": "1",
            "SERVE_INCLUDE_SCHEMA": False,
            "COMPONENT_SPLIT_REQUEST": True,
            "SCHEMA_PATH_PREFIX": r"/api/",
            "POSTPROCESSING_HOOKS": [
                "drf_spectacular.hooks.postprocess_schema_enums",
                "tracker_api.schema.add_error_responses",
            ],
            "ENUM_NAME_OVERRIDES": {
                "RoleEnum": "tracker.services.access.ROLES",
                "RunStatusEnum": "tracker.models.runs.Run.Status",
            },
        },
    }
