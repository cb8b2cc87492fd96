"""All configuration comes from the environment, read here and nowhere else.

With nothing set the portal runs embedded: SQLite, the in-memory channel layer and an SQLite
broker, so a fresh machine needs nothing but Python. The embedded broker is kombu's SQLAlchemy
transport on var/celery-broker.sqlite3: each publish and each delivery is one SQLite transaction,
so a worker never reads half a message (kombu's filesystem transport can hand a consumer an empty
file, which kills the worker: kombu issue #1551). vx11_site.broker deletes delivered messages.
REDIS_URL switches broker, result store and channel layer to Redis;
DATABASE_URL=postgres://... switches the database to PostgreSQL.
"""

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: bool) -> bool:
    """A boolean accepts only clear values; anything else stops the start-up loudly."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _envnumber(name: str, default, cast):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}") from None


def envint(name: str, default: int) -> int:
    return _envnumber(name, default, int)


def envfloat(name: str, default: float) -> float:
    return _envnumber(name, default, float)


def envsecret(name: str, default: str | None = None) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


VAR_DIR = Path(os.environ.get("VX11_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    # Embedded mode: a key generated once per checkout and kept in var/ (git-ignored).
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        from django.core.management.utils import get_random_secret_key

        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

# the test client's "testserver" is not served: Django's test set-up adds it to the tests' own copy
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "django_celery_results",
    # ninja renders its API docs with the Swagger/Redoc assets it ships (static/ninja/), not from a CDN
    "ninja",
    "axes",
    "csp",
    "vx11_site",
    "apps.accounts",
    "apps.fleet",
    "apps.events",
    "apps.daughters",
    "apps.power",
    "apps.flows",
    "apps.operator",
    "apps.simfleet",
    "apps.evidence",
    "apps.audits",
    "apps.housekeeping",
    "apps.metrics",
    "apps.pipeline",
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
    "csp.middleware.CSPMiddleware",
    # before any view (the session and the user above load lazily, in the view): a NUL or a JSON NaN never
    # reaches the database; its 400/422 still gets the headers of the middleware above
    "vx11_site.middleware.RefuseUnstorableInput",
    # last, as django-axes asks: it turns a locked-out login into the lockout page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "vx11_site.urls"
ASGI_APPLICATION = "vx11_site.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -------------------------------------------------------------------------
_sqlite_path = VAR_DIR / "vx11.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(os.environ.get("DATABASE_URL", f"sqlite:///{_sqlite_path}"), conn_max_age=0)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # daphne, the worker and beat all write: WAL plus IMMEDIATE transactions avoid "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not :memory:, so a real worker or daphne process in the tests sees the same test
    # database; one per test run, so two runs side by side do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-vx11-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

# --- Security -----------------------------------------------------------------------------
# Logins (the admin's form) go through django-axes first: VX11_LOGIN_FAILURE_LIMIT failures for one
# username from one address lock that pair out for VX11_LOGIN_COOLOFF_MINUTES (429, the lockout page).
# The attempts are rows in the database, so every process agrees, on SQLite too.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("VX11_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("VX11_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [
    ["username", "ip_address"]
]  # a guesser locks out only itself, never the real admin elsewhere
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "apps.accounts.views.login_locked_out"
AXES_DISABLE_ACCESS_LOG = True  # a row per successful login, never pruned; the failures are what matters here
AXES_VERBOSE = False
# A client address sending more bad API keys than this in a minute gets 429 for any key until its minute ends.
VX11_API_KEY_FAILURES_PER_MIN = envint("VX11_API_KEY_FAILURES_PER_MIN", 10)

# Behind TLS: Secure cookies, HSTS, the redirect to https; with all of them on, `check --deploy` is clean.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("VX11_SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = envint("VX11_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("VX11_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool(
    "VX11_HSTS_PRELOAD", False
)  # asks browsers' preload lists to take the domain: on purpose only
SECURE_SSL_REDIRECT = envbool("VX11_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # a load balancer's plain-http health check
# A TLS-terminating proxy that sets X-Forwarded-Proto (and strips any the client sent): requests it marks
# https are secure. Without it behind such a proxy, VX11_SSL_REDIRECT would redirect forever.
if envbool("VX11_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Every page's scripts come from the portal's own static files (no inline script, no eval). Inline
# styles stay allowed: the admin's templates, ours and Swagger UI set style attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": [
            "'self'"
        ],  # fetch of the API docs and the WebSocket (CSP3: 'self' covers ws/wss to the same host)
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# whitenoise serves static files from daphne too; finders mean no collectstatic step in the embedded setup
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

NINJA_PAGINATION_PER_PAGE = 100
NINJA_PAGINATION_MAX_LIMIT = 1000

# --- Redis, channels, Celery ------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": envint("VX11_CHANNEL_CAPACITY", 5000), "expiry": 60},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # An unacknowledged message (its worker died) goes back to the queue after this long;
    # the daughters' reaper usually retries the daughter first (VX11_DAUGHTER_STALE_SECONDS).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("VX11_BROKER_VISIBILITY_TIMEOUT", 600)}
else:
    # sized like the Redis layer: the default capacity of 100 drops half of a burst silently
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": envint("VX11_CHANNEL_CAPACITY", 5000)},
        }
    }
    # kombu's SQLAlchemy transport on an SQLite file: transactional, and part of Python (see vx11_site.broker)
    CELERY_BROKER_URL = f"vx11sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
    # how long a publish waits for SQLite's write lock before it fails (and Celery retries it)
    CELERY_BROKER_TRANSPORT_OPTIONS = {"connect_args": {"timeout": 30}}
    CELERY_RESULT_BACKEND = "django-db"

CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("VX11_CELERY_QUEUE", "celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# beat writes PeriodicTask.last_run_at after every task it sends (default: every 3 minutes): the tick /health watches
CELERY_BEAT_SYNC_EVERY = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = envbool("VX11_CELERY_EAGER", False)
# Daughters are acknowledged late; one message at a time per worker process keeps the queue fair.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker that loses its broker (Redis restarted, SQLite file locked) keeps trying to reconnect, never gives up.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# --- VX11 ---------------------------------------------------------------------------------
VX11_PROBE_INTERVAL_SECONDS = envint("VX11_PROBE_INTERVAL_SECONDS", 15)
# how often the web process checks beat and the probe rounds and alerts on a stall (apps.fleet.watchdog); 0 = never
VX11_WATCHDOG_SECONDS = envfloat("VX11_WATCHDOG_SECONDS", 10.0)
VX11_PROBE_DEFAULT_TIMEOUT = envfloat("VX11_PROBE_DEFAULT_TIMEOUT", 3.0)
VX11_PROBE_CONCURRENCY = envint("VX11_PROBE_CONCURRENCY", 2000)
# Every outbound request (probes, flows, daughters, upstreams, webhooks) goes through vx11_site.outbound:
# each address a host resolves to must be in ALLOW and not in DENY (deny wins). CIDRs or host names, comma-separated.
VX11_OUTBOUND_ALLOW = [
    e.strip()
    for e in os.environ.get(
        "VX11_OUTBOUND_ALLOW", "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    ).split(",")
    if e.strip()
]
VX11_OUTBOUND_DENY = [
    e.strip() for e in os.environ.get("VX11_OUTBOUND_DENY", "169.254.0.0/16,fe80::/10").split(",") if e.strip()
]
VX11_RAW_RETENTION_HOURS = envint("VX11_RAW_RETENTION_HOURS", 24)
VX11_MINUTE_RETENTION_DAYS = envint("VX11_MINUTE_RETENTION_DAYS", 7)
VX11_HOUR_RETENTION_DAYS = envint("VX11_HOUR_RETENTION_DAYS", 90)
VX11_DAY_RETENTION_DAYS = envint("VX11_DAY_RETENTION_DAYS", 730)
VX11_PRUNE_CHUNK = envint("VX11_PRUNE_CHUNK", 5000)
VX11_WINDOW_RETENTION_DAYS = envint("VX11_WINDOW_RETENTION_DAYS", 365)  # ended maintenance/power windows kept
# Notifications by e-mail: Django's mail settings; a hung SMTP server must not outlive the retry backoff.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if os.environ.get("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envsecret("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "vx11-portal@localhost")

VX11_EVENT_RETENTION_HOURS = envint("VX11_EVENT_RETENTION_HOURS", 72)
# X-VX11-Token for the operator endpoints and /ws: from the environment, or made once into var/ (embedded).
VX11_TOKEN = envsecret("VX11_TOKEN")
if not VX11_TOKEN:
    _token_file = VAR_DIR / "vx11_token"
    if not _token_file.exists():
        import secrets

        _token_file.write_text(secrets.token_urlsafe(24))
        _token_file.chmod(0o600)
    VX11_TOKEN = _token_file.read_text().strip()
# the portal user the CLI's writing verbs (vx11 spawn, vx11 flow run|load) act as without --as; empty: the OS login
VX11_CLI_USER = os.environ.get("VX11_CLI_USER", "")
VX11_UPSTREAM_TIMEOUT = envfloat("VX11_UPSTREAM_TIMEOUT", 3.0)
VX11_OVERVIEW_STALE_SECONDS = envint("VX11_OVERVIEW_STALE_SECONDS", 60)
VX11_WS_MAX_FRAME = envint("VX11_WS_MAX_FRAME", 64 * 1024)
VX11_WS_RATE = envfloat("VX11_WS_RATE", 20.0)  # messages per second a client may send, sustained
VX11_WS_BURST = envint("VX11_WS_BURST", 40)
# The in-memory layer does not cross processes (events published by the Celery worker would
# never reach daphne), so WebSocket clients then also poll the stored events.
VX11_WS_POLL_SECONDS = envfloat("VX11_WS_POLL_SECONDS", 0.0 if REDIS_URL else 1.0)
VX11_EVIDENCE_ROOT = Path(os.environ.get("VX11_EVIDENCE_ROOT", VAR_DIR / "evidence")).resolve()
# evidence bags (apps.evidence): older than this move to docs/audit/archive/, deleted only past the second
VX11_EVIDENCE_ARCHIVE_DAYS = envint("VX11_EVIDENCE_ARCHIVE_DAYS", 7)
VX11_EVIDENCE_DELETE_DAYS = envint("VX11_EVIDENCE_DELETE_DAYS", 90)

# --- daughters (apps.daughters) -----------------------------------------------------------
VX11_DAUGHTER_MAX_RUNNING = envint("VX11_DAUGHTER_MAX_RUNNING", 8)  # madre's cap; the rest wait queued by priority
VX11_DAUGHTER_TTL_SECONDS = envint("VX11_DAUGHTER_TTL_SECONDS", 300)
VX11_DAUGHTER_MAX_RETRIES = envint("VX11_DAUGHTER_MAX_RETRIES", 2)
VX11_DAUGHTER_HEARTBEAT_SECONDS = envfloat("VX11_DAUGHTER_HEARTBEAT_SECONDS", 5.0)
VX11_DAUGHTER_STALE_SECONDS = envint("VX11_DAUGHTER_STALE_SECONDS", 60)  # no heartbeat for this long = stale
VX11_DAUGHTER_START_TIMEOUT = envint(
    "VX11_DAUGHTER_START_TIMEOUT", 120
)  # queued to a worker but never started: queue again
VX11_DAUGHTER_REAP_INTERVAL = envint("VX11_DAUGHTER_REAP_INTERVAL", 15)
VX11_DAUGHTER_RETENTION_DAYS = envint("VX11_DAUGHTER_RETENTION_DAYS", 30)
VX11_DAUGHTER_IDEMPOTENCY_HOURS = envint(
    "VX11_DAUGHTER_IDEMPOTENCY_HOURS", 24
)  # a spawn's Idempotency-Key is honoured this long
VX11_DAUGHTER_OUTPUT_CHARS = envint("VX11_DAUGHTER_OUTPUT_CHARS", 4000)
# The commands a daughter may run: {"name": ["argv", ...]}, or {"name": {"argv": [...], "env": ["NAME", ...]}} for one
# that needs variables of the worker's environment; a daughter's own args are appended. Never run through a shell;
# a command sees PATH, LANG, VX11_DAUGHTER_ATTEMPT and its entry's "env" names, never the rest (secrets, database URLs).
# Replace or extend with VX11_DAUGHTER_COMMANDS='{"name": [...]}' (JSON).
VX11_DAUGHTER_COMMANDS = {
    "true": ["true"],
    "false": ["false"],
    "sleep": ["sleep"],
    "uptime": ["uptime"],
    "df": ["df", "-h"],
}
try:
    import json as _json

    def _argv_ok(v) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(a, str) for a in v)

    def _env_ok(v) -> bool:
        return isinstance(v, list) and all(isinstance(n, str) and n.isascii() and n.isidentifier() for n in v)

    VX11_DAUGHTER_COMMANDS.update(_json.loads(os.environ.get("VX11_DAUGHTER_COMMANDS", "{}")))
    assert all(
        _argv_ok(v)
        or (isinstance(v, dict) and set(v) <= {"argv", "env"} and _argv_ok(v.get("argv")) and _env_ok(v.get("env", [])))
        for v in VX11_DAUGHTER_COMMANDS.values()
    )
except (ValueError, AssertionError, AttributeError) as _exc:
    raise ImproperlyConfigured(
        'VX11_DAUGHTER_COMMANDS must be a JSON object of name -> argument list or {"argv": [...], "env": [names]}, '
        'e.g. {"ls": ["ls", "-l"], "dump": {"argv": ["pg_dump"], "env": ["PGPASSWORD"]}}'
    ) from _exc

# --- power (apps.power) -------------------------------------------------------------------
# Guards of the power manager (apps.power); see README "Power manager".
VX11_ALLOW_SERVICE_CONTROL = envbool(
    "VX11_ALLOW_SERVICE_CONTROL", False
)  # off: every start/stop/restart is refused (403)
VX11_MAINTENANCE_WINDOW_ENABLED = envbool(
    "VX11_MAINTENANCE_WINDOW_ENABLED", True
)  # on: applying needs a window covering the service
# madre's second factor: X-VX11-Token applies on /madre/power/* only with X-VX11-POWER-KEY equal to this (unset: never)
VX11_POWER_KEY = envsecret("VX11_POWER_KEY", "") or ""
VX11_POWER_RATE_LIMIT_PER_MIN = envint("VX11_POWER_RATE_LIMIT_PER_MIN", 6)  # applied requests per user per minute
VX11_POWER_REFUSAL_AUDIT_PER_MIN = envint(
    "VX11_POWER_REFUSAL_AUDIT_PER_MIN", 30
)  # a user's refused requests audited per minute; beyond, only logged
VX11_POWER_COMMAND_TIMEOUT = envfloat("VX11_POWER_COMMAND_TIMEOUT", 30.0)  # seconds for docker compose / systemctl
VX11_POWER_HEALTH_TIMEOUT = envfloat("VX11_POWER_HEALTH_TIMEOUT", 15.0)  # process backend: wait for /health up or gone
VX11_POWER_STOP_GRACE = envfloat(
    "VX11_POWER_STOP_GRACE", 5.0
)  # default SIGTERM -> SIGKILL grace of a new ServiceControl
VX11_POWER_WINDOW_MAX_TTL = envint("VX11_POWER_WINDOW_MAX_TTL", 86400)  # longest power window, seconds
VX11_POWER_WINDOW_CHECK_SECONDS = envint("VX11_POWER_WINDOW_CHECK_SECONDS", 2)  # beat interval of the expiry checker
VX11_POWER_ACTION_RETENTION_DAYS = envint("VX11_POWER_ACTION_RETENTION_DAYS", 180)
VX11_POWER_CLAIM_STALE_SECONDS = envint(
    "VX11_POWER_CLAIM_STALE_SECONDS", 600
)  # a claim older than this (crashed worker) is taken over
VX11_POWER_WINDOW_STOP_ATTEMPTS = envint(
    "VX11_POWER_WINDOW_STOP_ATTEMPTS", 10
)  # tries to stop a module at ttl expiry before giving up
VX11_POWER_WINDOW_RETRY_SECONDS = envint(
    "VX11_POWER_WINDOW_RETRY_SECONDS", 10
)  # wait between those tries (a busy module's action ends)
VX11_POWER_LOG_MAX_BYTES = envint(
    "VX11_POWER_LOG_MAX_BYTES", 1_000_000
)  # process backend: var/power/<slug>.log is cut to its last half beyond this
VX11_COMPOSE_PROJECT = os.environ.get("VX11_COMPOSE_PROJECT", "vx11")

# --- flows (apps.flows) -------------------------------------------------------------------
VX11_FLOW_HTTP_TIMEOUT = envfloat(
    "VX11_FLOW_HTTP_TIMEOUT", 5.0
)  # seconds for a step's HTTP call when the step sets none
VX11_FLOW_MAX_WAIT_SECONDS = envint(
    "VX11_FLOW_MAX_WAIT_SECONDS", 900
)  # the longest a step may wait (HTTP timeout, DB "within")
VX11_FLOW_DB_POLL_SECONDS = envfloat("VX11_FLOW_DB_POLL_SECONDS", 0.2)  # how often a DB step looks for its rows
VX11_FLOW_EXCERPT_CHARS = envint(
    "VX11_FLOW_EXCERPT_CHARS", 2000
)  # stored excerpt of each step's request and response body
VX11_FLOW_INTERVAL_SECONDS = envint(
    "VX11_FLOW_INTERVAL_SECONDS", 300
)  # beat schedule the data migration creates (editable in the admin)
VX11_FLOW_RUN_RETENTION_DAYS = envint(
    "VX11_FLOW_RUN_RETENTION_DAYS", 30
)  # runs (and their step results) older than this are pruned
VX11_FLOW_RUN_STALE_SECONDS = envint(
    "VX11_FLOW_RUN_STALE_SECONDS", 1800
)  # an unfinished run older than this (or 2x its longest wait) was interrupted
VX11_FLOW_RUN_HEARTBEAT_SECONDS = envfloat(
    "VX11_FLOW_RUN_HEARTBEAT_SECONDS", 10.0
)  # a running run says it is alive this often
VX11_FLOW_RUN_SILENT_SECONDS = envint(
    "VX11_FLOW_RUN_SILENT_SECONDS", 60
)  # a running run without a heartbeat this long: its process is gone
VX11_FLOW_SYNC_MAX_SECONDS = envint(
    "VX11_FLOW_SYNC_MAX_SECONDS", 60
)  # API run with wait=true refused (409) when the flow's longest wait is over this
# models a flow's db step may query ("app.Model" or "app.*"); auth, sessions, accounts, admin are refused even if listed
VX11_FLOW_DB_MODELS = [
    m.strip()
    for m in os.environ.get(
        "VX11_FLOW_DB_MODELS",
        "daughters.Daughter,daughters.DaughterTask,flows.*,fleet.Module,fleet.StateChange,power.PowerAction",
    ).split(",")
    if m.strip()
]
# environment variables a flow may read as {{ env.NAME }}, besides every VX11_FLOW_* name (VX11_TOKEN never)
VX11_FLOW_ENV_NAMES = [n.strip() for n in os.environ.get("VX11_FLOW_ENV_NAMES", "").split(",") if n.strip()]

# --- audits (apps.audits) -----------------------------------------------------------------
# the managed VX11 checkout the portal audits (fs/git checks, housekeeping); the demo makes a small one
VX11_ROOT = Path(os.environ.get("VX11_ROOT", VAR_DIR / "vx11_root")).resolve()
# the fleet's database the audits read (never write): a SQLite path, or a postgres:// URL
VX11_TARGET_DB = os.environ.get("VX11_TARGET_DB", str(VAR_DIR / "vx11_target.db"))
VX11_AUDIT_INTEGRITY_TIMEOUT = envint("VX11_AUDIT_INTEGRITY_TIMEOUT", 60)  # seconds per PRAGMA check, then skipped
# folders a SQLite target (after following symlinks) must lie in; empty: VX11_ROOT and VX11_VAR_DIR
VX11_AUDIT_ALLOWED_ROOTS = [
    Path(p.strip()).resolve() for p in os.environ.get("VX11_AUDIT_ALLOWED_ROOTS", "").split(",") if p.strip()
] or [VX11_ROOT, VAR_DIR]
VX11_AUDIT_RETENTION_DAYS = envint("VX11_AUDIT_RETENTION_DAYS", 180)  # audit runs kept (their bags rotate apart)
VX11_AUDIT_WAIT_MAX_SECONDS = envint("VX11_AUDIT_WAIT_MAX_SECONDS", 60)  # most an API request waits (?wait=N)

# --- filesystem checks and housekeeping (apps.audits.fs, apps.housekeeping) -------------------
# the folders a VX11 checkout is meant to have (the real canonical target list, plus switch/hermes where hermes
# lives): Orden_fs_pct counts them; a nested entry also allows its first folder at the top level
_VX11_CANONICAL_ROOTS = (
    ".github,archive,attic,build,config,data,docs,forensic,gateway.deprecated,hormiguero,madre,manifestator,mcp,"
    "models,operator,operator_backend,prompts,scripts,shubniggurath,spawner,switch,switch/hermes,tentaculo_link,"
    "tests,tests_legacy,tools"
)
VX11_FS_ALLOWED_ROOTS = [
    r.strip().strip("/") for r in os.environ.get("VX11_FS_ALLOWED_ROOTS", _VX11_CANONICAL_ROOTS).split(",") if r.strip()
]
# the protected-paths list; empty: <VX11_ROOT>/docs/audit/CLEANUP_EXCLUDES_CORE.txt, else the built-in real list
VX11_CLEANUP_EXCLUDES = os.environ.get("VX11_CLEANUP_EXCLUDES", "")
VX11_BACKUP_KEEP = envint("VX11_BACKUP_KEEP", 2)  # newest files of data/backups/ kept; the rest go to archived/
VX11_HOUSEKEEPING_AUDIT_DAYS = envint("VX11_HOUSEKEEPING_AUDIT_DAYS", 7)  # docs/audit/<stamp>_* older: to the attic

# --- metrics and the scorecard (apps.metrics) -------------------------------------------------
# Estabilidad_operativa_pct's weights, "health=0.35,tests=0.30,contract=0.25,db=0.10"; they must sum to 1
# (apps.metrics.definitions.stability_weights refuses them otherwise, here at start and at every computation)
VX11_METRIC_WEIGHTS = {
    k.strip(): float(v)
    for k, v in (
        part.split("=", 1)
        for part in os.environ.get("VX11_METRIC_WEIGHTS", "health=0.35,tests=0.30,contract=0.25,db=0.10").split(",")
        if part.strip()
    )
}
_weights_sum = sum(VX11_METRIC_WEIGHTS.values())
if set(VX11_METRIC_WEIGHTS) != {"health", "tests", "contract", "db"} or abs(_weights_sum - 1) > 1e-9:
    raise ImproperlyConfigured(
        f"VX11_METRIC_WEIGHTS must give health, tests, contract and db weights summing to 1, not {VX11_METRIC_WEIGHTS}"
    )
# freshness bounds, a JSON object {metric name: seconds}, over each definition's default: older evidence is NV "stale"
VX11_METRIC_MAX_AGE_SECONDS = json.loads(os.environ.get("VX11_METRIC_MAX_AGE_SECONDS", "{}"))
VX11_METRICS_RETENTION_DAYS = envint("VX11_METRICS_RETENTION_DAYS", 90)  # scorecards kept (the latest always)
VX11_METRICS_WAIT_MAX_SECONDS = envint("VX11_METRICS_WAIT_MAX_SECONDS", 60)  # most POST /api/metrics/compute waits
# /metrics (Prometheus): the scrape key (Authorization: Bearer or X-Metrics-Key); empty: open to loopback clients only
VX11_METRICS_KEY = envsecret("VX11_METRICS_KEY", "") or ""


# --- the autonomy pipeline (apps.pipeline) ------------------------------------------------------
# phase 2 moves what housekeeping finds only when this is on; off, it is a dry run that lists the candidates
VX11_PIPELINE_CLEANUP_APPLY = envbool("VX11_PIPELINE_CLEANUP_APPLY", False)
# phase 3's test commands, a JSON list of {"name", "kind": "unit"|"integration", "argv": [...], "report":
# "junit"|"pytest-json", "timeout": seconds}; "{report}" in argv is replaced by the report file's path
VX11_PIPELINE_TESTS = json.loads(os.environ.get("VX11_PIPELINE_TESTS", "[]"))
VX11_PIPELINE_TESTS_CWD = Path(os.environ.get("VX11_PIPELINE_TESTS_CWD", BASE_DIR)).resolve()
# the flows phase 3 runs, by name (the canonical three by default)
VX11_PIPELINE_FLOWS = [n.strip() for n in os.environ.get("VX11_PIPELINE_FLOWS", "A,B,C").split(",") if n.strip()]
# phase 5 checks the operator endpoints and /ws/{session} of the live portal at this address
VX11_PORTAL_URL = os.environ.get("VX11_PORTAL_URL", "http://127.0.0.1:8080").rstrip("/")
# a running phase that has not moved its heartbeat for this long is a lost worker: the sweep ends the run
VX11_PIPELINE_SILENT_SECONDS = envint("VX11_PIPELINE_SILENT_SECONDS", 300)
VX11_PIPELINE_HEARTBEAT_SECONDS = envfloat("VX11_PIPELINE_HEARTBEAT_SECONDS", 10)
VX11_PIPELINE_RETENTION_DAYS = envint("VX11_PIPELINE_RETENTION_DAYS", 180)
# phase 7: the portal's own working clone, the remote it pushes to (any git URL; empty: nothing is mirrored),
# the branch; credentials only from the environment (VX11_MIRROR_TOKEN, or git's own GIT_ASKPASS / ssh agent)
VX11_MIRROR_REPO = Path(os.environ.get("VX11_MIRROR_REPO", VAR_DIR / "mirror")).resolve()
# (default: the bare repository `vx11 demo` makes in var/, when there is one)
_demo_remote = VAR_DIR / "mirror-remote.git"
VX11_MIRROR_REMOTE = os.environ.get("VX11_MIRROR_REMOTE", str(_demo_remote) if _demo_remote.is_dir() else "")
VX11_MIRROR_BRANCH = os.environ.get("VX11_MIRROR_BRANCH", "main")
VX11_MIRROR_AUTHOR = os.environ.get("VX11_MIRROR_AUTHOR", "VX11 Ops Portal <portal@localhost>")
VX11_MIRROR_TIMEOUT = envint("VX11_MIRROR_TIMEOUT", 120)  # seconds per git command


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"apps": {"level": os.environ.get("LOG_LEVEL", "INFO"), "handlers": ["console"], "propagate": False}},
}
