"""Create the demo login and demo routines (idempotent)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from engine import api
from engine.models import Routine

DEMO_ROUTINES: dict[str, list[str | dict[str, Any]]] = {
    "Onboarding": [
        "greet",
        {
            "script": "ask_approval",
            "params": {
                "question": "Approve the new account?",
                "assign_to": "approvers",
                "timeout": 86400,  # a day to decide
            },
        },
        {"script": "slow_report", "params": {"seconds": 2}},
        "send_email",
    ],
    "Early finish": ["greet", "finish_early", "slow_report"],
    "Failing step": ["greet", "broken", "greet"],
    "Refused": ["greet", "smoke_signals", "greet"],
}


class Command(BaseCommand):
    help = "Create the demo user (printing its login) and the demo routines."

    def handle(self, *args, **options):
        password_file = settings.VAR_DIR / "demo-login.txt"
        User = get_user_model()
        user = User.objects.filter(username="demo").first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(9)
            user = user or User(username="demo", email="demo@example.com")
            user.is_staff = True
            user.is_superuser = True
            user.set_password(password)
            user.save()
            password_file.write_text(password)
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
        approver_password = self._approver(settings.VAR_DIR / "approver-login.txt")
        for name, steps in DEMO_ROUTINES.items():
            if not Routine.objects.filter(name=name).exists():
                api.create_routine(name, steps, owner=user)
        self.stdout.write(self.style.SUCCESS(f"Demo login: user 'demo', password '{password}'"))
        self.stdout.write(
            self.style.SUCCESS(
                f"Approver login (group 'approvers'): user 'approver', "
                f"password '{approver_password}'"
            )
        )

    def _approver(self, password_file: Any) -> str:
        """The 'approvers' group and a member of it who is no operator: the Onboarding
        flow's approval waits for them."""
        group, _ = Group.objects.get_or_create(name="approvers")
        User = get_user_model()
        approver = User.objects.filter(username="approver").first()
        if approver is None or not password_file.exists():
            password = secrets.token_urlsafe(9)
            approver = approver or User(username="approver", email="approver@example.com")
            approver.set_password(password)
            approver.save()
            password_file.write_text(password)
            password_file.chmod(0o600)
        approver.groups.add(group)
        return str(password_file.read_text().strip())
