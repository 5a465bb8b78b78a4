#!/usr/bin/env bash
# Set up and run tracker's tests: both legs (Python 3.11 + Django 5.2 LTS, Python 3.12 + Django
# 6.x) on both databases (the embedded SQLite default and the PostgreSQL server).
#
#   bash scripts/test.sh                       # everything, as CI runs it
#   bash scripts/test.sh --leg py311 --db sqlite -k notebook    # one leg, one database, pytest args
#
# PostgreSQL: TRACKER_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test). Under
# CI=true an unreachable PostgreSQL or a missing Python 3.12 fails the run; elsewhere that leg
# is reported and left out.
#
# The heavy suites (real Chromium, an S3 server, MLflow's own client; pytest markers browser,
# s3, mlflow) run on one leg only, py312 + PostgreSQL (--suites-on LEG/DB changes it), to keep
# a full run short; elsewhere they are deselected, never skipped. TRACKER_TEST_SUITES=browser,s3
# (or "all") selects them on every leg run, e.g. `TRACKER_TEST_SUITES=all bash scripts/test.sh
# --leg py311 --db sqlite -m browser`.
set -uo pipefail
cd "$(dirname "$0")/.."

legs="py311 py312"
dbs="sqlite postgres"
pytest_args=()
suites_on="py312/postgres"
while [ $# -gt 0 ]; do
  case "$1" in
    --leg) legs="$2"; shift 2 ;;
    --db) dbs="$2"; shift 2 ;;
    --suites-on) suites_on="$2"; shift 2 ;;
    *) pytest_args+=("$1"); shift ;;
  esac
done
pg_url="${TRACKER_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
ci="${CI:-}"

die() { echo "test.sh: $*" >&2; exit 1; }
note() { echo "test.sh: $*" >&2; }

python_for() {
  case "$1" in
    py311) command -v python3 ;;
    py312)
      local prefix
      prefix="$(pyenv prefix 3.12.1 2>/dev/null || true)"
      if [ -n "$prefix" ] && [ -x "$prefix/bin/python3" ]; then echo "$prefix/bin/python3"
      elif command -v python3.12 >/dev/null; then command -v python3.12
      fi ;;
  esac
}

django_for() {
  case "$1" in
    py311) echo "Django>=5.2,<6.0" ;;
    py312) echo "Django>=6.0,<6.2" ;;
  esac
}

venv_for() {
  case "$1" in
    py311) echo ".venv" ;;
    py312) echo ".venv-py312" ;;
  esac
}

setup_leg() {  # leg -> prints the venv's python
  local leg="$1" py venv
  py="$(python_for "$leg")"
  venv="$(venv_for "$leg")"
  [ -n "$py" ] || return 1
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" >&2 || return 1
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2 || return 1
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" "$(django_for "$leg")" >&2 || return 1
  echo "$venv/bin/python"
}

pg_reachable() {
  "$1" - "$pg_url" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://", 1), connect_timeout=5).close()
except Exception as exc:
    print(f"PostgreSQL at {sys.argv[1]} is unreachable: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

ensure_chromium() {  # the browser suite needs Debian's chromium; installed here when we may
  command -v chromium >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    note "installing Debian's chromium for the browser tests"
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; })
  fi
  command -v chromium >/dev/null
}

suites_for() {  # leg db -> the heavy suites this run selects
  if [ -n "${TRACKER_TEST_SUITES:-}" ]; then echo "$TRACKER_TEST_SUITES"
  elif [ "$1/$2" = "$suites_on" ]; then echo "browser,s3,mlflow"
  fi
}

failed=0
ran=0
summary=()
for leg in $legs; do
  if ! python="$(setup_leg "$leg")"; then
    [ -n "$ci" ] && die "could not set up leg $leg (python: '$(python_for "$leg")')"
    note "leg $leg left out: its Python could not be set up"; continue
  fi
  "$python" -c "import django, sys; print(f'leg $leg: Python {sys.version.split()[0]}, Django {django.get_version()}')"
  for db in $dbs; do
    url=""
    if [ "$db" = postgres ]; then
      if ! pg_reachable "$python"; then
        [ -n "$ci" ] && die "PostgreSQL is unreachable under CI=true"
        note "PostgreSQL run of leg $leg left out: server unreachable"; continue
      fi
      url="$pg_url"
    fi
    suites="$(suites_for "$leg" "$db")"
    if [[ ",$suites," == *",browser,"* || "$suites" == all ]] && ! ensure_chromium; then
      [ -n "$ci" ] && die "the browser tests need chromium (apt-get install chromium) under CI=true"
      note "chromium is missing: the browser tests fail on this leg"
    fi
    echo "=== leg $leg, database $db${suites:+ (with suites: $suites)} ==="
    TRACKER_TEST_SUITES="$suites" TRACKER_TEST_DATABASE_URL="$url" "$python" -m pytest -n 2 -p no:cacheprovider "${pytest_args[@]}"
    rc=$?
    ran=$((ran + 1))
    summary+=("leg $leg / $db: exit $rc")
    [ $rc -eq 0 ] || failed=1
  done
done
printf '%s\n' "${summary[@]}"
[ $ran -gt 0 ] || die "no test run happened"
exit $failed
