# Shared by demo.sh and test.sh: find an interpreter and build a virtual environment.
# Sourced, not run.

# python_for VERSION -> path of a CPython VERSION (e.g. 3.11): pyenv first, then PATH.
python_for() {
  local want=$1 found=""
  if command -v pyenv >/dev/null 2>&1; then
    local ver
    ver=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}(\.[0-9]+)?$" | sort -V | tail -n 1 || true)
    if [ -n "$ver" ]; then
      found="$(pyenv root)/versions/$ver/bin/python"
    fi
  fi
  if [ -z "$found" ] && command -v "python$want" >/dev/null 2>&1; then
    found=$(command -v "python$want")
  fi
  [ -n "$found" ] && [ -x "$found" ] && echo "$found"
}

# make_venv PYTHON DIR [EXTRAS]: a fresh venv with this project installed (not editable),
# so the run proves that an installed copy finds its WSDL, XSD, XSLT and sample files.
make_venv() {
  local python=$1 dir=$2 extras=${3:-}
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check ".${extras:+[$extras]}"
}
