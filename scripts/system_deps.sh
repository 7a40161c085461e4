#!/usr/bin/env bash
# The system programs the whole test suite drives: PostgreSQL 15 (a real job store), Debian's
# chromium (the map viewer's browser test) and QGIS 3 with its Python bindings (an analyst's
# client). Installed with apt when this runs as root on Debian; otherwise a missing one is an
# error that names it, so `make test` never skips those tests in silence.
set -euo pipefail
missing=()
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v chromium >/dev/null || missing+=(chromium)
if ! /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then
  missing+=(python3-qgis qgis-providers)
fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "make test needs: ${missing[*]} (Debian packages of those names); install them, or run" >&2
echo "the quick loop instead: .venv/bin/python -m pytest -m 'not postgres and not browser and not qgis'" >&2
exit 1
