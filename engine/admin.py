"""The engine's admin pages (Django's admin discovery imports this module): each slice
registers its own."""

from engine.flows import admin as flows_admin  # noqa: F401
from engine.ltm import admin as ltm_admin  # noqa: F401
