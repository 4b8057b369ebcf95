from django.apps import AppConfig


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Flow Studio"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine import events
        from studio.live.publisher import publish

        # The one place where engine events leave for the browser.
        events.connect(publish)
