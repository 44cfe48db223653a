# Developer entry points. `make run` for a local portal with demo data, `make test` for the suite
# (SQLite, then PostgreSQL too when TEST_DATABASE_URL is set). See README.md.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall only when a requirements file changes.
STAMP := $(VENV)/.requirements-installed
PRESET ?= runpod
# The SQLite run is forced explicitly so a DATABASE_URL in .env or the shell cannot redirect it.
SQLITE_URL := sqlite:///$(CURDIR)/db.sqlite3
PYTEST_ARGS ?= --durations=12
# The second, PostgreSQL pass runs everything that touches money, locks, jobs, the API and payouts.
# The pages, the browser, schema fuzzing and headers behave the same on both databases; they run
# in the SQLite pass only, which keeps CI well under its 20 minutes.
PG_SKIP ?= --ignore=tests/test_browser.py --ignore=tests/test_admin_browser.py --ignore=tests/test_schema_fuzz.py --ignore=tests/test_dashboard.py \
	--ignore=tests/test_dashboard_queries.py --ignore=tests/test_portal.py --ignore=tests/test_notifications.py \
	--ignore=tests/test_security.py --ignore=tests/test_attribution.py --ignore=tests/test_otp.py

.PHONY: venv migrate run worker beat test test-deep test-sqlite test-postgres lint audit clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	touch $@

migrate: venv
	$(PY) manage.py migrate --noinput

# Debug mode (static files, error pages) unless DJANGO_DEBUG is set in the environment or .env.
# Periodic jobs: celery beat runs beside the server; without REDIS_URL it runs each due job
# inline (embedded mode, no Redis needed). See README "Periodic jobs".
run: migrate
	$(PY) manage.py load_preset $(PRESET)
	$(PY) manage.py seed_demo --preset $(PRESET)
	$(PY) manage.py setup_schedules
	$(PY) manage.py setup_roles
	$(PY) manage.py seed_staff_demo
	@if [ -z "$${DJANGO_DEBUG+set}" ] && ! grep -qs '^DJANGO_DEBUG=' .env; then export DJANGO_DEBUG=true; fi; \
	$(VENV)/bin/celery -A referrals_site beat --loglevel=INFO & beat=$$!; \
	trap 'kill $$beat 2>/dev/null' EXIT INT TERM; \
	echo "==> serving on http://127.0.0.1:8000 (staff admin at /admin/; celery beat pid $$beat)"; \
	$(PY) manage.py runserver 127.0.0.1:8000

# The real processes, against Redis (REDIS_URL, e.g. redis://127.0.0.1:6379/0).
worker: venv
	@$(PY) -c 'import referrals_site.settings as _; \
		import sys; sys.exit(0 if _.REDIS_URL else "REDIS_URL is not set: make worker needs Redis (make run embeds the jobs)")'
	$(VENV)/bin/celery -A referrals_site worker --loglevel=INFO

beat: migrate
	@$(PY) -c 'import referrals_site.settings as _; \
		import sys; sys.exit(0 if _.REDIS_URL else "REDIS_URL is not set: make beat needs Redis (make run embeds the jobs)")'
	$(PY) manage.py setup_schedules
	$(VENV)/bin/celery -A referrals_site beat --loglevel=INFO

# The whole suite as CI runs it: scripts/test-all.sh provisions redis-server, Chromium and a
# throwaway PostgreSQL where they are missing (apt-get, as root), runs pytest on SQLite and then
# on PostgreSQL (both runs always happen), and ends with a summary line per run and a total.
test: venv
	@bash scripts/test-all.sh

# The property tests with the deep Hypothesis profile (>= 1,000 examples each); not part of CI.
test-deep: venv
	HYPOTHESIS_PROFILE=deep DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest -q tests/test_ledger_properties.py tests/test_payouts_properties.py $(PYTEST_ARGS)

test-sqlite: venv
	@echo "==> pytest on SQLite ($(SQLITE_URL); tests use an in-memory copy)"
	DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: venv
	@test -n "$$TEST_DATABASE_URL" || { echo "TEST_DATABASE_URL is not set (see scripts/pg-throwaway.sh)"; exit 2; }
	@echo "==> pytest on PostgreSQL ($$TEST_DATABASE_URL; tests use a test_ copy of that database)"
	@DATABASE_URL="$$TEST_DATABASE_URL" $(PY) manage.py shell --verbosity 0 -c \
		"from django.db import connection as c; c.ensure_connection(); \
		print('    connected:', c.vendor, c.pg_version, c.settings_dict['HOST'], c.settings_dict['PORT'])"
	DATABASE_URL="$$TEST_DATABASE_URL" $(PY) -m pytest $(PG_SKIP) $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .

# Supply chain: bandit (no medium or high finding) and pip-audit (no known vulnerability) on
# the runtime requirements. pip-audit asks PyPI's JSON API; see docs/deploy.md for waivers.
# check --deploy refuses development secrets (referrals_site/checks.py), so it runs with placeholders.
audit: venv
	$(PY) -m bandit -q -r ledger referrals payouts backoffice referrals_site integrations notifications billing \
		-x '*/migrations/*,*/tests/*' -ll
	$(PY) -m pip_audit -r requirements.txt --vulnerability-service pypi --progress-spinner off
	DJANGO_SECURE=true DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(64))') \
		STRIPE_SECRET_KEY=sk_live_audit_placeholder STRIPE_WEBHOOK_SECRET=whsec_audit_placeholder \
		PAYPAL_CLIENT_ID=audit-placeholder PAYPAL_CLIENT_SECRET=audit-placeholder WISE_API_TOKEN=audit-placeholder \
		DJANGO_ALLOWED_HOSTS=referrals.example.com $(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
