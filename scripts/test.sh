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
set -uo pipefail
cd "$(dirname "$0")/.."

legs="py311 py312"
dbs="sqlite postgres"
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --leg) legs="$2"; shift 2 ;;
    --db) dbs="$2"; shift 2 ;;
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
    echo "=== leg $leg, database $db ==="
    TRACKER_TEST_DATABASE_URL="$url" "$python" -m pytest -n 2 -p no:cacheprovider "${pytest_args[@]}"
    rc=$?
    ran=$((ran + 1))
    summary+=("leg $leg / $db: exit $rc")
    [ $rc -eq 0 ] || failed=1
  done
done
printf '%s\n' "${summary[@]}"
[ $ran -gt 0 ] || die "no test run happened"
exit $failed
