"""Write (or check) the MLM STAC item of every shipped bundle: ``<bundle>/mlm.stac.json``.

    python scripts/write_mlm_items.py           # write them
    python scripts/write_mlm_items.py --check   # exit 1 when one differs from its card/weights

Run it after a bundle's card or weights change (tests/models/test_mlm.py checks it was).
"""

from __future__ import annotations

import argparse
import json
import sys

from geo_hires.models.card import bundle_dir, shipped_models
from geo_hires.models.mlm import MLM_FILE, mlm_item, write_mlm_item


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args()
    stale = []
    for name in shipped_models():
        if args.check:
            path = bundle_dir(name) / MLM_FILE
            if not path.is_file() or json.loads(path.read_text()) != mlm_item(name):
                stale.append(name)
        else:
            print(write_mlm_item(name))
    if stale:
        print(f"stale MLM items: {', '.join(stale)}; run python scripts/write_mlm_items.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
