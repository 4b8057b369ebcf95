from django.apps import AppConfig


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Flow Studio"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine import events
        from studio import live

        # The one place where engine events leave for the browser.
        events.connect(live.publish)
