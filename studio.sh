#!/usr/bin/env bash
# Flow Studio's two commands:
#   ./studio.sh start   set everything up and start the studio on its embedded defaults
#   ./studio.sh test    set everything up and run the whole test suite (extra args go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_apt() {  # need_apt BINARY PACKAGE WHY
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $2 ($3)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "Flow Studio needs '$1' ($3): install the '$2' package, e.g. 'sudo apt-get install $2'." >&2
    return 1
  fi
}

setup() {
  if [ ! -x .venv/bin/python ]; then
    command -v "$PYTHON" >/dev/null || { echo "Flow Studio needs Python 3.11 ($PYTHON)." >&2; exit 1; }
    say "creating the virtualenv in .venv"
    "$PYTHON" -m venv .venv
  fi
  stamp=.venv/.flowstudio-installed
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
  fi
  need_apt dot graphviz "draws routine and LTM diagrams" || true
}

case "${1:-}" in
  start)
    shift
    setup
    .venv/bin/python manage.py migrate --noinput -v 0
    .venv/bin/python manage.py seed_demo
    exec .venv/bin/python manage.py studio "$@"
    ;;
  test)
    shift
    setup
    need_apt chromium chromium "runs the browser tests" || true
    # The whole suite (no arguments, and always in CI) first checks style, types and the
    # architecture's contracts (docs/architecture.md); any failure stops it.
    if [ $# -eq 0 ] || [ "${CI:-}" = true ]; then
      say "checking style (ruff), types (mypy) and the architecture (import-linter)"
      .venv/bin/ruff check .
      .venv/bin/ruff format --check .
      .venv/bin/mypy
      .venv/bin/lint-imports
    fi
    # The suite starts a few hundred Python processes (consumers, servers). Where bytecode
    # is not written (PYTHONDONTWRITEBYTECODE), each compiled the project's modules again,
    # about 0.2 s a start: they are compiled once here (into the usual __pycache__).
    .venv/bin/python -m compileall -q engine studio tests bench manage.py >/dev/null || true
    set +e
    .venv/bin/python -m pytest "$@"
    code=$?
    set -e
    # pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
    [ "$code" = 5 ] && echo "no tests were collected" >&2
    exit "$code"
    ;;
  *)
    echo "usage: ./studio.sh start [--port N] | ./studio.sh test [pytest args]" >&2
    exit 2
    ;;
esac
