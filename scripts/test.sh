#!/usr/bin/env bash
# Fresh machine → the whole test suite.  This is the README's test command and
# exactly what CI runs (.ci/run).
#   1. the pytest suite on Python 3.11, against an installed (non-editable) copy, with the
#      PostgreSQL server and the external SOAP clients its tests drive installed first;
#   2. `archive-oa demo` on Python 3.12 and 3.13 (the spyne compatibility proof).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh

need() {  # need VERSION -> interpreter, or fail loudly in CI / skip locally
  local py
  if py=$(python_for "$1"); then echo "$py"; return 0; fi
  echo "Python $1 not found (pyenv or python$1 on PATH)" >&2
  return 1
}

# PostgreSQL server binaries: the [postgresql] tests start a server of their own from them
# (tests/postgres_server.py: initdb + pg_ctl in a temporary folder, as the postgres OS user).
have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 ||
    { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; }
}
if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing PostgreSQL (apt-get install postgresql) for the PostgreSQL tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "PostgreSQL server binaries not found: the [postgresql] tests skip (and fail with CI=true)" >&2
  fi
fi

py311=$(need 3.11)
echo "== Python 3.11: installing into .venv-test ($py311)" >&2
rm -rf .venv-test
make_venv "$py311" .venv-test test,postgres
echo "== external SOAP clients (PHP, Node soap, suds, JAX-WS wsimport)" >&2
bash scripts/install-clients.sh .venv-test
echo "== pytest" >&2
.venv-test/bin/python -m pytest "$@"

for version in 3.12 3.13; do
  if ! py=$(need "$version"); then
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "skipping the demo on $version" >&2
    continue
  fi
  echo "== Python $version: archive-oa demo ($py)" >&2
  rm -rf ".venv-$version"
  make_venv "$py" ".venv-$version"
  data=$(mktemp -d)
  ".venv-$version/bin/archive-oa" demo --data-dir "$data" --json
  rm -rf "$data"
done
echo "== all green" >&2
