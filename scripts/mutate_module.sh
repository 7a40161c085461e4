#!/bin/bash
# Mutation-test one module against the tests chosen for it, in a scratch copy of the checkout,
# so that a run takes minutes rather than the hours of a full `make mutate`.
#
#   scripts/mutate_module.sh OUT_DIR MODULE_PATH PYTEST_ARGS...
#   e.g. scripts/mutate_module.sh /tmp/mm/stac geo_hires/scene/stac.py \
#            tests/scene/test_stac.py -k "not runs_its_rgb_asset"
#
# The copy's [tool.mutmut] mutates MODULE_PATH only and selects PYTEST_ARGS (plus -m "not slow");
# everything else is pyproject.toml's. Score and survivors: scripts/mutation_score.py
# OUT_DIR/mutants --survivors; `mutmut show NAME` / `mutmut run NAME…` inside OUT_DIR.
# A service module (services/geo_hires_service/…) is mutated in a copy where the package sits
# at the top level: mutmut names a module by its path, and the tests import `geo_hires_service`,
# not `services.geo_hires_service`, so in place no service mutant would ever be switched on.
set -euo pipefail
out=$1 mod=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"
cp -a "$root"/{geo_hires,services,tests,demo,k8s,scripts,bench,pyproject.toml} "$out"/
find "$out" -name __pycache__ -prune -exec rm -rf {} +
cd "$out"
case $mod in
services/*)
  mv services/geo_hires_service geo_hires_service
  mod=${mod#services/}
  ;;
esac
"$py" - "$mod" "$@" <<'PY'
import json
import re
import sys

mod, tests = sys.argv[1], sys.argv[2:]
text = open("pyproject.toml").read()
if mod.startswith("geo_hires_service/"):
    text = re.sub(r"source_paths = \[.*?\]", 'source_paths = ["geo_hires", "geo_hires_service"]', text)
text = re.sub(r"only_mutate = \[.*?\n\]", "only_mutate = " + json.dumps([mod]), text, flags=re.S)
text = re.sub(
    r"pytest_add_cli_args_test_selection = \[.*?\]",
    "pytest_add_cli_args_test_selection = " + json.dumps([*tests, "-m", "not slow"]),
    text,
)
open("pyproject.toml", "w").write(text)
PY
nice -n 10 "$(dirname "$py")/mutmut" run --max-children "${MAX_CHILDREN:-1}" || true
"$py" "$root/scripts/mutation_score.py" mutants --survivors
