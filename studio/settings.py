"""Settings for Flow Studio.

Everything comes from the environment (and an optional `.env` file in the project root).
With nothing set the studio runs embedded: SQLite for Django, a separate SQLite file for
Huey, the Huey consumer inside the server process. `DATABASE_URL` and `REDIS_URL` switch to
PostgreSQL and Redis (Huey and the channel layer) with no code change.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Runtime files of the embedded mode (databases, secret key) live here, never in git.
VAR_DIR = Path(os.environ.get("FLOWSTUDIO_VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    # Embedded mode: one random key per installation, kept so that signed values (sessions,
    # pickled step results) stay valid across restarts.
    key_file = VAR_DIR / "secret.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# daphne serves the studio (`manage.py studio`, or `daphne studio.asgi:application`) but is not
# an installed app: its app loads its server (Twisted) at start-up in every process, the
# engine's consumers included, about 0.2 s each; it would only replace `runserver`.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "axes",  # throttled sign-ins (see "Sign-in throttling" below)
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "huey.contrib.djhuey",
    "django_htmx",
    "ninja",  # the REST API; listed so its docs page uses bundled files, not a CDN
    "engine",
    "studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "studio.middleware.DatabaseBusyMiddleware",
    # Last, as django-axes asks: turns a refused sign-in into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studio.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "studio.asgi.application"

# --- Database ------------------------------------------------------------------------------
# SQLite settings measured on this stack: WAL plus IMMEDIATE transactions and a busy timeout
# gave 0 "database is locked" errors under concurrent workers; the defaults failed a third.
#
# A checkpoint (the write-ahead log's pages copied into the database file) waits for the
# disk twice, and SQLite runs it inside the commit that takes the log past
# `wal_autocheckpoint` pages: every 1,000 pages (4 MB) by default, about every 150 steps of a
# flow, one commit in 150 taking up to 6 ms. At 10,000 pages it runs a tenth as often, and
# copies a page rewritten many times meanwhile (a flow's row, an index's last leaf) once:
# 5-10 % more steps a second (docs/performance.md, section 1). The log then holds up to about
# 40 MB; `journal_size_limit` cuts it back to 64 MB when it restarts after a longer burst.
SQLITE_CHECKPOINT_PAGES = 10_000
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
        f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}; "
        f"PRAGMA journal_size_limit={64 * 1024 * 1024};"
    ),
}

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
else:
    DATABASES = {
        "default": {
            # Django's SQLite backend, its connections reused (engine/sqlite/base.py)
            "ENGINE": "engine.sqlite",
            "NAME": str(VAR_DIR / "studio.sqlite3"),
        }
    }
SQLITE_ENGINES = {"django.db.backends.sqlite3", "engine.sqlite"}
if DATABASES["default"]["ENGINE"] in SQLITE_ENGINES:
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
    # Closed at the end of each request, task and round, a connection goes back to its
    # file's pool (engine/sqlite/base.py): the next request's thread takes it as it is.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Django's default test database is in-memory with a shared cache, which locks whole
    # tables and ignores the busy timeout: two threads fail at once. Use a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

# PostgreSQL: each process takes its connections from a bounded pool (Django's psycopg pool).
# Persistent per-thread connections (CONN_MAX_AGE) were not bounded: daphne runs each request
# in a thread of its own, and every thread kept a connection, so 200 concurrent requests to
# one server ran the database out of connections. With the pool a connection goes back to it
# at the end of each request, task and housekeeping round (the pool needs CONN_MAX_AGE 0), and
# a thread finding none free waits up to DATABASE_POOL_TIMEOUT seconds (then: 503).
# DATABASE_POOL_SIZE is the most connections one process opens; unset, it follows the process
# (engine/dbpool.py): DATABASE_WEB_POOL_SIZE for a web server, worker threads + 2 for an
# engine consumer, their sum for `manage.py studio` with the consumer inside.
DATABASE_POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE") or 0) or None
DATABASE_POOL_TIMEOUT = float(os.environ.get("DATABASE_POOL_TIMEOUT") or 30)
DATABASE_WEB_POOL_SIZE = 10


def _connection_label() -> str:
    """`flowstudio <command> <pid>`: whose connection it is, in pg_stat_activity."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    program = script.parent.name if script.name == "__main__.py" else script.name  # python -m
    if program == "manage.py" and len(sys.argv) > 1:
        program = sys.argv[1]
    return f"flowstudio {program.removesuffix('.py')} {os.getpid()}"[:63]


POSTGRESQL_ENGINES = {"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"}
if DATABASES["default"]["ENGINE"] in POSTGRESQL_ENGINES:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("application_name", _connection_label())  # unless the URL names one
    if env_bool("DATABASE_PREPARED", True):
        # The engine's own statements are prepared on their connection (engine/rows.py,
        # `Prepared`, which asks for each). psycopg prepares nothing without a threshold;
        # this one is never reached, so nothing else is prepared (Django's cursors bind on
        # the client and never are). DATABASE_PREPARED=0 behind a pooler that cannot keep a
        # session's prepared statements (PgBouncer before 1.21 in transaction mode).
        _options["prepare_threshold"] = 2**31 - 1
    _options["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE or DATABASE_WEB_POOL_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Huey ----------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
HUEY_WORKERS = int(os.environ.get("HUEY_WORKERS", "2"))
_huey_poll = float(os.environ.get("HUEY_POLL_SECONDS", "0.5"))
_huey_consumer = {
    "workers": HUEY_WORKERS,
    "worker_type": "thread",
    # How long an idle worker of a polling queue sleeps at most between looks. The SQLite
    # queue's idle workers wait for its doorbell instead, and look this often only as the
    # fallback for a missed ring; Redis-backed Huey blocks on the list (BRPOP).
    "max_delay": _huey_poll,
    "backoff": 1.15,
    "periodic": True,
    "check_worker_health": True,
}
if REDIS_URL:
    HUEY: dict[str, Any] = {
        # Huey's RedisHuey, without its revocation lookup for the engine's tasks (a Redis
        # round trip per task: see engine/queue.py).
        "huey_class": "engine.queue.EngineRedisHuey",
        "name": os.environ.get("HUEY_NAME", "flowstudio"),
        "url": REDIS_URL,
        # Idle workers block on the queue (BRPOP, back in Huey's loop every second): a task
        # starts as soon as it is pushed, with no polling (Huey's default, said here).
        "blocking": True,
        "immediate": env_bool("HUEY_IMMEDIATE", False),
        "results": False,
        "consumer": _huey_consumer,
    }
else:
    HUEY = {
        # Huey's SQLite storage at synchronous=NORMAL, with a doorbell: an enqueue wakes the
        # idle workers of every consumer on this machine (see engine/queue.py).
        "huey_class": "engine.queue.QuickSqliteHuey",
        "name": "flowstudio",
        # Huey's queue lives in its own file: sharing Django's file doubles lock contention.
        "filename": os.environ.get("HUEY_SQLITE_PATH") or str(VAR_DIR / "huey.sqlite3"),
        "synchronous": os.environ.get("HUEY_SQLITE_SYNCHRONOUS", "NORMAL"),
        "doorbell": env_bool("HUEY_DOORBELL", True),
        "poll_seconds": _huey_poll,
        "immediate": env_bool("HUEY_IMMEDIATE", False),
        "results": False,
        "consumer": _huey_consumer,
    }

# --- Channels ------------------------------------------------------------------------------
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: an event is published once per group and reaches each server
            # process once, which hands it to its own watchers in memory. (The list-based
            # RedisChannelLayer stores one copy per watching socket and pops them one by one:
            # with a hundred watchers that was a hundred Redis round trips per event.)
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": os.environ.get("HUEY_NAME", "flowstudio") + ":live",
            },
        }
    }
else:
    # The embedded consumer runs in the server process; this layer reaches the server's loop
    # from its worker threads (see studio/live/layers.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "studio.live.layers.ThreadSafeInMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    }

# --- Cache ---------------------------------------------------------------------------------
if REDIS_URL:
    # Shared by every server process: the API's rate limit counts a user's requests across all
    # of them. (Embedded mode has one server process and keeps Django's local-memory cache.)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("HUEY_NAME", "flowstudio"),
        }
    }

# --- Engine --------------------------------------------------------------------------------
FLOWSTUDIO: dict[str, Any] = {
    # A running flow holds a lease; a lease that expires (its worker died) is swept and the
    # flow re-queued. Steps that take longer should declare `lease_seconds` on the script.
    "LEASE_SECONDS": float(os.environ.get("FLOW_LEASE_SECONDS", "60")),
    # Each consumer process beats its row this often; one silent for WORKER_TIMEOUT_SECONDS
    # is taken for dead and the flows and LTM executions it held are handed on at once.
    "HEARTBEAT_SECONDS": float(os.environ.get("FLOW_HEARTBEAT_SECONDS", "1")),
    "WORKER_TIMEOUT_SECONDS": float(os.environ.get("FLOW_WORKER_TIMEOUT_SECONDS", "5")),
    # A queued flow or offloaded job not started after this long is queued again.
    "QUEUE_GRACE_SECONDS": float(os.environ.get("FLOW_QUEUE_GRACE_SECONDS", "600")),
    # How often the consumer sweeps expired leases and re-checks waiting flows.
    "SWEEP_SECONDS": float(os.environ.get("FLOW_SWEEP_SECONDS", "5")),
    "RECHECK_SECONDS": float(os.environ.get("FLOW_RECHECK_SECONDS", "30")),
    # How often each server process checks its sockets against the database (a live message
    # the channel layer lost is found this way); notification counts every 5th check.
    "LIVE_CHECK_SECONDS": float(os.environ.get("FLOWSTUDIO_LIVE_CHECK_SECONDS", "2")),
    # Modules holding Task scripts or LTMs outside installed apps' scripts.py / ltms.py.
    "SCRIPT_MODULES": env_list("FLOWSTUDIO_SCRIPT_MODULES", ""),
    # Requests per user to the REST API ("600/min", "20/s"; "off" disables the limit).
    "API_RATE": os.environ.get("FLOWSTUDIO_API_RATE", "600/min"),
    # An LTM run keeps a whole snapshot of itself every this many events: the time machine
    # (engine.api.ltm_at / rollback_ltm / copy_ltm) replays at most as many changes.
    "LTM_CHECKPOINT_EVERY": int(os.environ.get("FLOWSTUDIO_LTM_CHECKPOINT_EVERY", "100")),
    # A worker goes on with the LTM state its commit queued, without a trip through the
    # queue, up to this many executions in a row; then the next goes through the queue, so a
    # run that loops for ever holds a worker no longer (fewer: fairer between runs; more:
    # less queueing for long chains and fan-outs).
    "LTM_IN_A_ROW": int(os.environ.get("FLOWSTUDIO_LTM_IN_A_ROW", "50")),
}
# Largest request body Django reads (bytes); the REST API answers 413 above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("FLOWSTUDIO_MAX_BODY_BYTES", str(1024 * 1024)))

# --- Auth, i18n, static --------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The axes backend first: it refuses a locked-out account or address before any password is
# checked; it authenticates no one itself.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# --- Sign-in throttling (django-axes) ---------------------------------------------------------
# After FLOWSTUDIO_LOGIN_FAILURES failed sign-ins for one username, or from one client address
# (whatever the usernames), further sign-ins for it are refused — on the studio's page and the
# admin's — for FLOWSTUDIO_LOGIN_LOCKOUT_MINUTES after the last failure, with a 429 page that
# says when to try again. Failures count while each comes within that many minutes of the one
# before. A successful sign-in forgets that account's failures from that address (only: an
# attacker who signs in to an account of their own must not reset their count for others').
# 0 failures switches throttling off. The state is in the database, so every server process
# shares it. An administrator can lift a lockout early in the admin ("Access attempts") or
# with `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`.
LOGIN_FAILURES = int(os.environ.get("FLOWSTUDIO_LOGIN_FAILURES", "5"))
LOGIN_LOCKOUT_MINUTES = float(os.environ.get("FLOWSTUDIO_LOGIN_LOCKOUT_MINUTES", "15"))
AXES_ENABLED = LOGIN_FAILURES > 0
AXES_FAILURE_LIMIT = max(LOGIN_FAILURES, 1)
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_HANDLER = "studio.web.login_throttle.LoginThrottleHandler"  # axes' database handler
AXES_RESET_ON_SUCCESS = False  # the handler resets only the account's failures from its address
# Tries while locked out are refused without being counted: the lockout ends when the page said.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "studio.web.login_throttle.lockout_response"
AXES_CLIENT_IP_CALLABLE = "studio.web.login_throttle.client_ip"
AXES_USERNAME_CALLABLE = "studio.web.login_throttle.client_username"
AXES_DISABLE_ACCESS_LOG = True  # failures are kept (until they expire); successes are not
AXES_HTTP_RESPONSE_CODE = 429  # axes' default, named here: the lockout page answers with it
# Behind a reverse proxy (DJANGO_BEHIND_PROXY=1) the client's address is taken from
# X-Forwarded-For, as appended by the FLOWSTUDIO_PROXY_COUNT proxies in front of the studio;
# otherwise it is the connection's own address and X-Forwarded-For is never trusted.
BEHIND_PROXY = env_bool("DJANGO_BEHIND_PROXY", False)
FLOWSTUDIO["PROXY_COUNT"] = (
    int(os.environ.get("FLOWSTUDIO_PROXY_COUNT", "1")) if BEHIND_PROXY else 0
)

# --- E-mail --------------------------------------------------------------------------------
# Notifications of human steps (an assignee is told a flow waits for them; a reminder before
# a deadline) and password resets. SMTP with DJANGO_EMAIL_HOST (and the DJANGO_EMAIL_* below),
# or any backend with DJANGO_EMAIL_BACKEND (DJANGO_EMAIL_FILE_PATH for the file backend).
# With neither, e-mail is not configured: notifications are printed on the studio's console
# (the in-app ones work as ever), the password-reset pages answer 404 and the sign-in page
# offers no "forgot your password?" link. FLOWSTUDIO_BASE_URL is the studio's address as
# users reach it, for the links in e-mails.
EMAIL_HOST = os.environ.get("DJANGO_EMAIL_HOST", "").strip()
_email_backend = os.environ.get("DJANGO_EMAIL_BACKEND", "").strip()
if _email_backend:
    EMAIL_BACKEND = _email_backend
elif not EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
if os.environ.get("DJANGO_EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = os.environ["DJANGO_EMAIL_FILE_PATH"]
FLOWSTUDIO["BASE_URL"] = os.environ.get("FLOWSTUDIO_BASE_URL", "http://127.0.0.1:8000")
EMAIL_PORT = int(os.environ.get("DJANGO_EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("DJANGO_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("DJANGO_EMAIL_PASSWORD", "")
EMAIL_USE_SSL = env_bool("DJANGO_EMAIL_SSL", False)  # implicit TLS (usually port 465)
EMAIL_USE_TLS = env_bool("DJANGO_EMAIL_TLS", not EMAIL_USE_SSL)  # STARTTLS (port 587)
EMAIL_TIMEOUT = 10  # seconds: a mail server that does not answer must not hang a request
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_EMAIL_FROM", "flowstudio@localhost")
# Password resets are offered only when they can be sent (studio/web/views/accounts.py).
FLOWSTUDIO["PASSWORD_RESET"] = bool(EMAIL_HOST or _email_backend)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# The embedded server serves static files itself (plain daphne does not).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Behind HTTPS in production (DJANGO_SECURE=1): secure cookies, HSTS, redirect to HTTPS.
SECURE = env_bool("DJANGO_SECURE", False)
if SECURE:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
    if BEHIND_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it to send X-CSRFToken on unsafe requests
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# Content-Security-Policy (django-csp): scripts and styles only from the project's own static
# files (htmx is served by django-htmx from static/, never a CDN); no inline scripts or styles.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "engine": {"handlers": ["console"], "level": os.environ.get("ENGINE_LOG_LEVEL", "INFO")},
        "huey": {"handlers": ["console"], "level": os.environ.get("HUEY_LOG_LEVEL", "WARNING")},
        # Failed sign-ins and lockouts (usernames and addresses masked).
        "axes": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
