"""Settings for Flow Studio.

Everything comes from the environment (and an optional `.env` file in the project root).
With nothing set the studio runs embedded: SQLite for Django, a separate SQLite file for
Huey, the Huey consumer inside the server process. `DATABASE_URL` and `REDIS_URL` switch to
PostgreSQL and Redis (Huey and the channel layer) with no code change.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

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

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
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
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "studio.sqlite3",
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    # Django's default test database is in-memory with a shared cache, which locks whole
    # tables and ignores the busy timeout: two threads fail at once. Use a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Huey ----------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
HUEY_WORKERS = int(os.environ.get("HUEY_WORKERS", "2"))
_huey_consumer = {
    "workers": HUEY_WORKERS,
    "worker_type": "thread",
    # SQLite-backed Huey polls when idle; a short max delay keeps start-up of a task quick.
    "max_delay": 0.5,
    "backoff": 1.15,
    "periodic": True,
    "check_worker_health": True,
}
if REDIS_URL:
    HUEY = {
        "huey_class": "huey.RedisHuey",
        "name": os.environ.get("HUEY_NAME", "flowstudio"),
        "url": REDIS_URL,
        "immediate": env_bool("HUEY_IMMEDIATE", False),
        "results": False,
        "consumer": _huey_consumer,
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": "flowstudio",
        # Huey's queue lives in its own file: sharing Django's file doubles lock contention.
        "filename": os.environ.get("HUEY_SQLITE_PATH") or str(VAR_DIR / "huey.sqlite3"),
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
    # from its worker threads (see studio/layers.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "studio.layers.ThreadSafeInMemoryChannelLayer",
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
FLOWSTUDIO = {
    # A running flow holds a lease; a lease that expires (its worker died) is swept and the
    # flow re-queued. Steps that take longer should declare `lease_seconds` on the script.
    "LEASE_SECONDS": float(os.environ.get("FLOW_LEASE_SECONDS", "60")),
    # A queued flow or offloaded job not started after this long is queued again.
    "QUEUE_GRACE_SECONDS": float(os.environ.get("FLOW_QUEUE_GRACE_SECONDS", "600")),
    # How often the consumer sweeps expired leases and re-checks waiting flows.
    "SWEEP_SECONDS": float(os.environ.get("FLOW_SWEEP_SECONDS", "5")),
    "RECHECK_SECONDS": float(os.environ.get("FLOW_RECHECK_SECONDS", "30")),
    # Modules holding Task scripts or LTMs outside installed apps' scripts.py / ltms.py.
    "SCRIPT_MODULES": env_list("FLOWSTUDIO_SCRIPT_MODULES", ""),
    # Requests per user to the REST API ("600/min", "20/s"; "off" disables the limit).
    "API_RATE": os.environ.get("FLOWSTUDIO_API_RATE", "600/min"),
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
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

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
    if env_bool("DJANGO_BEHIND_PROXY", False):
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
    },
}
