"""Test settings: the project's settings with their own runtime directory and Huey in
immediate mode (integration tests switch it off and start a real consumer process)."""

import os
import tempfile

# Each test run gets its own runtime directory (databases, Huey queue, secret key), so runs
# never share a queue; consumer processes started by the tests inherit it.
os.environ.setdefault("FLOWSTUDIO_VAR_DIR", tempfile.mkdtemp(prefix="flowstudio-test-"))
os.environ.setdefault("HUEY_IMMEDIATE", "1")
# In scale-out runs several test runs may share one Redis: give this run its own queue name.
os.environ.setdefault("HUEY_NAME", f"flowstudio-test-{os.getpid()}")
os.environ.setdefault("FLOWSTUDIO_SCRIPT_MODULES", "tests.catalog,tests.ltm_catalog,tests.ltm_flou")

from studio.settings import *  # noqa: E402,F403

# Sign-in throttling stays on in tests (its state is in the database, so each test starts
# with none); only Django's test Client.login(), which passes no request, skips axes' check.
AUTHENTICATION_BACKENDS = ["tests.backends.ClientLoginAxesBackend", *AUTHENTICATION_BACKENDS[1:]]  # noqa: F405

# Django's test client speaks as "testserver"; modules that use it at import time (the REST
# fuzz reads the schema while collecting) run before pytest-django allows that host.
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]  # noqa: F405

# A fast password hasher: the tests create hundreds of users, and the real one takes about
# half a second a password on a small machine (what is tested does not depend on it).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
