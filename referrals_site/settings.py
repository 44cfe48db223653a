"""Settings for the referral portal, read from the environment (django-environ).

Production differs from development only by environment variables; see `.env.example`.
"""
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "backoffice.admin_config.PortalAdminConfig",  # Django's admin, with the staff overview on its index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "ledger",
    "referrals",
    "payouts",
    "backoffice",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # NUL bytes, lone surrogates and control characters in a path, query or form: refused here (issue 15).
    "referrals_site.text.BadTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "referrals.attribution.middleware.ReferralLinkMiddleware",
]

ROOT_URLCONF = "referrals_site.urls"
WSGI_APPLICATION = "referrals_site.wsgi.application"

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
            # Money and dates are written one way on every page and in the admin.
            "builtins": ["referrals.templatetags.figures"],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# A worker keeps its database connection between requests (checked before reuse, so a restarted
# database is reconnected to): opening one per request cost a single-event POST several
# milliseconds, and each new PostgreSQL session plans the ledger and rollup triggers anew.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Form and raw bodies read through Django (portal and admin forms, provider webhooks): a few KB in
# practice; a larger body is refused (400, or 413 by the webhooks) before it is read. The API's
# JSON parser has its own limit (referrals.api.base.MAX_BODY_BYTES: a batch of 1000 events).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One date style across the portal and the admin ("2 Dec 2026"), not en-us's "Dec. 2, 2026".
FORMAT_MODULE_PATH = ["referrals.formats"]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["referrals.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["referrals.api.renderers.JsonRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "referrals.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Per API key. The local-memory cache counts per process; production points the cache at Redis.
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_RATE_LIMIT", default="6000/minute"),
                               # Wrong, malformed, revoked or expired keys per client IP (then 429).
                               "api_auth_failures": env.str("API_AUTH_FAILURE_LIMIT", default="20/minute")},
}

# Referral programme settings that are deployment-wide rather than per programme.
REFERRAL = {
    "CURRENCY": env.str("REFERRAL_CURRENCY", default="USD"),
    # How long the attribution cookie remembers a click.
    "ATTRIBUTION_WINDOW_DAYS": env.int("REFERRAL_ATTRIBUTION_WINDOW_DAYS", default=30),
    # "last": the latest valid click wins; "first": the first click inside the window wins.
    "ATTRIBUTION_MODEL": env.str("REFERRAL_ATTRIBUTION_MODEL", default="last"),
    "COOKIE_NAME": "ref",
    # Two sign-ups sharing an IP or device within this many days are treated as associated.
    "SELF_REFERRAL_WINDOW_DAYS": env.int("REFERRAL_SELF_REFERRAL_WINDOW_DAYS", default=30),
    # Events dated further in the future than this are refused (clock skew allowance).
    "MAX_CLOCK_SKEW_SECONDS": env.int("REFERRAL_MAX_CLOCK_SKEW_SECONDS", default=300),
    # More than this many clicks on one link in this many minutes before a sign-up flags it.
    "CLICK_BURST_COUNT": env.int("REFERRAL_CLICK_BURST_COUNT", default=50),
    "CLICK_BURST_MINUTES": env.int("REFERRAL_CLICK_BURST_MINUTES", default=10),
    # Clicks counted per visitor IP and minute (0: no limit); more are not counted.
    "CLICKS_PER_IP_PER_MINUTE": env.int("REFERRAL_CLICKS_PER_IP_PER_MINUTE", default=30),
    # The client IP behind a proxy (referrals_site/client_ip.py): X-Forwarded-For is read only
    # when the peer is one of these networks (CIDRs), or else through exactly this many proxies.
    # Neither set: REMOTE_ADDR, the header is ignored.
    "TRUSTED_PROXIES": env.list("REFERRAL_TRUSTED_PROXIES", default=[]),
    "PROXY_COUNT": env.int("REFERRAL_PROXY_COUNT", default=0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Django's default config gives "django" a console handler of its own; without this,
    # every request line would be printed twice (once more through the root logger).
    "loggers": {"django": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# --- Partner API: OpenAPI schema, throttle counters, batch ingestion, outbound webhooks (issue 7) ---
INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar", "integrations"]
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "referrals.api.schema.ApiAutoSchema"
SPECTACULAR_SETTINGS = {
    "TITLE": "Referral portal integration API",
    "DESCRIPTION": "The integration API of shared/API.md: push account and money events, read "
                   "stats, earnings and balances, act as staff. See docs/api.md for a how-to.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI from the installed sidecar package's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
}
# Per-key request counters: atomic INCR+EXPIRE in Redis when REDIS_URL is set, else a
# per-process local-memory counter (see referrals.api.auth.ApiKeyThrottle).
API_THROTTLE_REDIS_URL = env.str("API_THROTTLE_REDIS_URL", default=env.str("REDIS_URL", default=""))
# Stateless money events of a batch, up to this many in a row, are stored and applied in one
# transaction inside the request; a longer run is stored, answered at once, and applied by a
# task queued on commit (referrals.engine.ingestion). 1000 (a whole batch) applies every batch
# in its request: 20-30 % more applied events/s in bench/ingest.py, but a 1,000-event POST
# then answers in about 200 ms instead of 50 ms (docs/benchmarks.md, "Ingestion").
INGEST_INLINE_APPLY_MAX = env.int("INGEST_INLINE_APPLY_MAX", default=200)
# Events one applier transaction takes at most (referrals.engine.ingestion.apply_pending).
APPLY_BATCH_MAX = env.int("APPLY_BATCH_MAX", default=1000)
# Outbound webhooks (integrations app).
WEBHOOKS = {
    "TIMEOUT_SECONDS": env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0),
    "MAX_ATTEMPTS": env.int("WEBHOOK_MAX_ATTEMPTS", default=8),
    "BACKOFF_BASE_SECONDS": env.int("WEBHOOK_BACKOFF_BASE_SECONDS", default=30),
    "DISABLE_AFTER_FAILURES": env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=20),
}

# --- Payouts: providers, webhooks, approval (issue 4) ---
# The demo (`make run`, DEBUG on) pays through local fakes of Stripe, PayPal and Wise served by the
# dev server itself (payouts/fakes/demo.py), so demo payouts complete through every method and never
# reach a real host. A provider whose *_API_BASE is given in the environment is called there instead.
PAYOUT_DEMO_FAKES = env.bool("PAYOUT_DEMO_FAKES", default=DEBUG)
_DEMO_FAKE = f"{SITE_URL}/payouts/dev/fake-"
# Stripe. STRIPE_API_BASE is only changed to point tests at a local fake server; the billing
# connector uses it. Stripe Connect payouts call STRIPE_CONNECT_API_BASE (the demo's fake, else the same).
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="sk_test_dev_only")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="whsec_dev_only")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_CONNECT_API_BASE = env.str("STRIPE_CONNECT_API_BASE",
                                  default=f"{_DEMO_FAKE}stripe" if PAYOUT_DEMO_FAKES else STRIPE_API_BASE)
# How old a signed webhook may be (seconds) before it is refused as a replay.
STRIPE_WEBHOOK_TOLERANCE = env.int("STRIPE_WEBHOOK_TOLERANCE", default=300)
# Stripe's event bodies are a few KB; a larger delivery is refused (413) unread and unstored.
STRIPE_WEBHOOK_MAX_BYTES = env.int("STRIPE_WEBHOOK_MAX_BYTES", default=DATA_UPLOAD_MAX_MEMORY_SIZE)
# The Stripe billing connector (billing app, docs/integration.md): the operator's own Stripe
# account, connected in the admin. A webhook body above this size is refused (400) unread.
INSTALLED_APPS += ["billing"]
STRIPE_BILLING_MAX_BODY_BYTES = env.int("STRIPE_BILLING_MAX_BODY_BYTES", default=512 * 1024)
# PayPal Payouts REST (OAuth2 client credentials) and Wise REST (API token).
PAYPAL_API_BASE = env.str("PAYPAL_API_BASE", default=f"{_DEMO_FAKE}paypal" if PAYOUT_DEMO_FAKES
                          else "https://api-m.sandbox.paypal.com")
PAYPAL_CLIENT_ID = env.str("PAYPAL_CLIENT_ID", default="dev-client-id")
PAYPAL_CLIENT_SECRET = env.str("PAYPAL_CLIENT_SECRET", default="dev-client-secret")
WISE_API_BASE = env.str("WISE_API_BASE", default=f"{_DEMO_FAKE}wise" if PAYOUT_DEMO_FAKES
                        else "https://api.sandbox.transferwise.tech")
WISE_API_TOKEN = env.str("WISE_API_TOKEN", default="dev-wise-token")
WISE_PROFILE_ID = env.str("WISE_PROFILE_ID", default="0")
# Seconds before a provider call gives up (connect and read); the payout stays processing and
# is retried with the same idempotency key.
PAYOUT_PROVIDER_TIMEOUT = env.float("PAYOUT_PROVIDER_TIMEOUT", default=10.0)
# Payouts strictly below this amount (e.g. "50.00") are approved without staff; 0 = off.
PAYOUT_AUTO_APPROVE_BELOW = env.str("PAYOUT_AUTO_APPROVE_BELOW", default="0")
# Maker-checker: payouts strictly above this amount need two approvals by two different staff
# members (or API keys); "0" = every payout needs one approval only. See docs/payouts.md.
PAYOUT_SECOND_APPROVAL_ABOVE = env.str("PAYOUT_SECOND_APPROVAL_ABOVE", default="1000.00")
# A payout left processing for longer than this (minutes) is retried by retry_stuck_payouts.
PAYOUT_STUCK_AFTER_MINUTES = env.int("PAYOUT_STUCK_AFTER_MINUTES", default=15)
# Send an approved payout to its provider right after the approval commits (else: the job does).
PAYOUT_PROCESS_ON_APPROVE = env.bool("PAYOUT_PROCESS_ON_APPROVE", default=True)

# --- dashboard e-mail notifications (issue 5) ---
INSTALLED_APPS += ["notifications"]
# Sender of the portal's e-mails (notifications, password reset).
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Referral portal <no-reply@localhost>")

# --- Security (issue 8) ---
# Everything that only makes sense behind HTTPS is switched on by one variable, so a
# production deployment sets DJANGO_SECURE=true (docs/deploy.md) and development stays plain HTTP.
SECURE = env.bool("DJANGO_SECURE", default=False)
SECURE_SSL_REDIRECT = SECURE
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000 if SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
BEHIND_PROXY = env.bool("DJANGO_BEHIND_PROXY", default=SECURE)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_COOKIE_AGE", default=60 * 60 * 24 * 7)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.ScryptPasswordHasher",
                    "django.contrib.auth.hashers.PBKDF2PasswordHasher"]

# Content-Security-Policy (django-csp): no inline scripts or styles anywhere; the pages
# load their CSS and JS from /static/ only.
INSTALLED_APPS += ["csp", "axes"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "csp.middleware.CSPMiddleware")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Login throttling (django-axes): five failures for one username from one IP lock that pair out
# for an hour; the lock-out answers 429. API keys are not affected (no passwords there).
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# The lock-out is per visitor, not per proxy: the same client IP as every other per-IP rule.
AXES_CLIENT_IP_CALLABLE = "referrals_site.client_ip.client_ip"

# Static files are served by the WSGI app itself (whitenoise), so gunicorn alone serves the
# portal's CSS and JS in production (after collectstatic) and `make run` needs no DEBUG for them.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "whitenoise.middleware.WhiteNoiseMiddleware")
WHITENOISE_USE_FINDERS = not SECURE

# --- Periodic jobs on Celery beat (issue 3) ---
INSTALLED_APPS += ["django_celery_beat"]
REDIS_URL = env.str("REDIS_URL", default="")
# Embedded mode (no REDIS_URL): tasks run eagerly where they are queued; `make run` runs beat
# beside the web server. With Redis, `make worker` and `make beat` run the real processes.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A message is acknowledged only once its task finished; a worker killed mid-task leaves it to be
# redelivered (after the visibility timeout on Redis) and the idempotent job runs again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Seconds before an unacknowledged message is delivered again: longer than the longest job.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# Redis down: the web process must not hang on publishing. A publish gives up after about a
# second (the caller logs it; beat sends the job again at its next tick, and the jobs catch up).
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.5}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Two-factor sign-in for staff (issue 8): TOTP devices from django-otp ---
# A staff user with a confirmed authenticator needs its code to use the admin; with
# STAFF_OTP_REQUIRED every staff user must enrol one first (backoffice.sites).
INSTALLED_APPS += ["django_otp", "django_otp.plugins.otp_totp"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "django_otp.middleware.OTPMiddleware")
STAFF_OTP_REQUIRED = env.bool("STAFF_OTP_REQUIRED", default=False)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Referral portal")
# The admin's device pages never show a secret key or its QR code to other staff.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- The referral click's fast path (issues 8 and 9, referrals/attribution/clicks.py) ---
REFERRAL |= {
    # Repeat clicks from one visitor on one referrer's links within this many seconds count once
    # as a unique click (SPEC: a day).
    "CLICK_UNIQUE_WINDOW": env.int("REFERRAL_CLICK_UNIQUE_WINDOW", default=24 * 3600),
    # How long a code → account lookup is trusted, in every cache layer, after it was read.
    "CLICK_CODE_CACHE_SECONDS": env.int("REFERRAL_CLICK_CODE_CACHE_SECONDS", default=30),
    # "buffered": clicks are written after the answer by a background thread, in batches, every
    # CLICK_FLUSH_INTERVAL_MS or once CLICK_FLUSH_BATCH are waiting; "direct": in the request.
    "CLICK_WRITE": env.str("REFERRAL_CLICK_WRITE", default="buffered"),
    "CLICK_FLUSH_INTERVAL_MS": env.int("REFERRAL_CLICK_FLUSH_INTERVAL_MS", default=500),
    "CLICK_FLUSH_BATCH": env.int("REFERRAL_CLICK_FLUSH_BATCH", default=500),
    # Clicks kept in memory while the database refuses writes; past this, new ones are dropped (logged).
    "CLICK_BUFFER_MAX": env.int("REFERRAL_CLICK_BUFFER_MAX", default=100_000),
}
# A `?ref=` link is answered by a redirect before the session, CSRF, auth and messages middleware
# (none of which a redirect needs), still inside the security, static-file and CSP middleware.
MIDDLEWARE.remove("referrals.attribution.middleware.ReferralLinkMiddleware")
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware"),
                  "referrals.attribution.middleware.ReferralLinkMiddleware")
# The unique-click keys, per-IP click counters, code lookups and API throttle live in this cache:
# Redis shared by every process when REDIS_URL is set, else one process's memory (big enough to
# hold a day of unique-click keys on a small deployment).
# CACHE_REDIS_URL (e.g. the same server, another database number) keeps a cache.clear() away from
# Celery's queues; it defaults to REDIS_URL.
CACHE_REDIS_URL = env.str("CACHE_REDIS_URL", default=REDIS_URL)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_REDIS_URL,
                "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}}
    if CACHE_REDIS_URL else
    {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 100_000}}
}

# --- Clicks on the operator's own site (issue 14, referrals/attribution/tracking.py, docs/integration.md) ---
REFERRAL |= {
    # Origins (scheme://host[:port]) whose pages may call POST /api/v1/track/click: the operator's site.
    # Calls from any other origin are refused (403) and record nothing.
    "TRACKING_ORIGINS": env.list("REFERRAL_TRACKING_ORIGINS", default=[]),
    # Where the portal's redirect links (/r/CODE) send the visitor, with `ref` and `click_id` added;
    # a template link (/r/CODE/t/TEMPLATE) goes to TEMPLATE_URL with {template} filled in. Only the
    # hosts of these two URLs (and SITE_URL's) are ever redirected to. Empty: SITE_URL + "/" and
    # SITE_URL + "/t/{template}" (the portal's own pages).
    "LANDING_URL": env.str("REFERRAL_LANDING_URL", default=""),
    "TEMPLATE_URL": env.str("REFERRAL_TEMPLATE_URL", default=""),
    # The portal's own public address, for the redirect links shown on the dashboard. Empty: SITE_URL.
    "PORTAL_URL": env.str("REFERRAL_PORTAL_URL", default="").rstrip("/"),
    # Calls of the public tracking endpoint per client IP and minute, whatever the code (0: no limit);
    # counted clicks are limited further by CLICKS_PER_IP_PER_MINUTE, shared with `?ref=` links.
    "TRACK_REQUESTS_PER_IP_PER_MINUTE": env.int("REFERRAL_TRACK_REQUESTS_PER_IP_PER_MINUTE", default=120),
}
