from importlib import import_module

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from engine import config


class EngineConfig(AppConfig):
    name = "engine"
    verbose_name = "Workflow engine"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Scripts register themselves when their class is defined: import every installed
        # app's `scripts.py` and `ltms.py` (and any configured module) so the registry is
        # complete at start-up, in the server and in every consumer process alike.
        autodiscover_modules("scripts")
        autodiscover_modules("ltms")
        for module in config.script_modules():
            import_module(module)
        # Queued work leaves through engine.dispatch; Huey is plugged in here, at the edge.
        import_module("engine.huey_tasks").install()
        # The root LTMs found above, with the Django runtime as their default.
        import_module("engine.ltm.registry").setup()
