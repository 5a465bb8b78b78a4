from django.apps import AppConfig


class TrackerApiConfig(AppConfig):
    name = "tracker_api"
    verbose_name = "Tracker API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tracker_api import schema  # noqa: F401  (registers the OpenAPI auth schemes)
