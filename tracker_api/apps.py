from django.apps import AppConfig


class TrackerApiConfig(AppConfig):
    name = "tracker_api"
    verbose_name = "Tracker API"
    default_auto_field = "django.db.models.BigAutoField"
