#!/usr/bin/env bash
# Installs the external SOAP clients that tests/test_external_clients.py drives, on a fresh
# Debian machine, as root: PHP SoapClient (php-cli php-soap), JAX-WS wsimport for the JDK 17
# (Debian's jaxws; its runtime libjaxws-java comes with it), the npm package `soap`
# (tests/clients/node, from its package-lock.json) and suds-community into the given venv.
# Idempotent and quiet: what is already there is not installed again.
#
#   bash scripts/install-clients.sh VENV      e.g. bash scripts/install-clients.sh .venv-test
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: bash scripts/install-clients.sh VENV (the virtual environment that runs pytest)}
SUDS_VERSION=1.2.0  # pinned like tests/clients/node/package-lock.json: the table names versions

fail() {  # in CI a missing client is an error; locally the tests skip it with the reason
  echo "install-clients: $*" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
}

packages=()
if ! command -v php >/dev/null 2>&1; then
  packages+=(php-cli php-soap)
elif ! php -m 2>/dev/null | grep -qx soap; then
  packages+=(php-soap)
fi
command -v wsimport >/dev/null 2>&1 || packages+=(jaxws)
command -v javac >/dev/null 2>&1 || packages+=(openjdk-17-jdk-headless)

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    fail "not root: cannot apt-get install ${packages[*]} (run this script as root)"
  else
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    # quiet: apt's and debconf's chatter is shown only when something fails
    if ! { apt-get -q -o DPkg::Lock::Timeout=300 update \
           && apt-get -q -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${packages[@]}"; } \
         >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      fail "apt-get install ${packages[*]} failed"
    fi
    rm -f "$log"
  fi
fi

# npm `soap` 1.13 needs Node.js 20.19 or newer (the machine's own Node.js; Debian's is older).
if command -v node >/dev/null 2>&1 && node -e '
    const [major, minor] = process.versions.node.split(".").map(Number);
    process.exit(major > 20 || (major === 20 && minor >= 19) ? 0 : 1)'; then
  (cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
else
  fail "Node.js 20.19 or newer is needed for the npm 'soap' client (found: $(node --version 2>/dev/null || echo none))"
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "suds-community==$SUDS_VERSION"
