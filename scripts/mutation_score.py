"""Mutation score per module from mutmut's result files (``mutants/**/*.py.meta``).

Score = killed / (killed + survived + no tests), as a percentage; timeouts count as killed
(the mutant made the code hang, and the run noticed), mutants not yet checked are left out and
counted separately so a partial run says how partial it is.

    python scripts/mutation_score.py [MUTANTS_DIR] [--markdown] [--survivors]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
LIVE = {"survived", "no tests", "suspicious"}


def load(root: Path) -> dict[str, dict[str, str]]:
    """``module -> {mutant name: status}`` for every meta file under ``root``."""
    out: dict[str, dict[str, str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = meta.relative_to(root).as_posix().removesuffix(".py.meta").replace("/", ".")
        out[module] = {k: status_by_exit_code[v] for k, v in codes.items()}
    return out


def table(results: dict[str, dict[str, str]], markdown: bool) -> str:
    rows = ["module | mutants | checked | killed | survived | no tests | score"]
    if markdown:
        rows.append("|".join(["---"] * 7))
    totals: collections.Counter[str] = collections.Counter()
    for module, statuses in results.items():
        c = collections.Counter(statuses.values())
        killed = sum(c[s] for s in KILLED)
        live = sum(c[s] for s in LIVE)
        checked = killed + live
        totals.update(mutants=len(statuses), checked=checked, killed=killed, live=live)
        totals.update(survived=c["survived"] + c["suspicious"], no_tests=c["no tests"])
        if not checked:
            continue
        rows.append(
            f"{module} | {len(statuses)} | {checked} | {killed} | "
            f"{c['survived'] + c['suspicious']} | {c['no tests']} | {100 * killed / checked:.1f} %"
        )
    if totals["checked"]:
        rows.append(
            f"all checked | {totals['mutants']} | {totals['checked']} | {totals['killed']} | "
            f"{totals['survived']} | {totals['no_tests']} | "
            f"{100 * totals['killed'] / totals['checked']:.1f} %"
        )
    if markdown:
        return "\n".join(f"| {r} |" if i != 1 else f"|{r}|" for i, r in enumerate(rows))
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="mutants", type=Path)
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    ap.add_argument("--survivors", action="store_true", help="list surviving mutant names")
    args = ap.parse_args()
    results = load(args.root)
    print(table(results, args.markdown))
    if args.survivors:
        for statuses in results.values():
            for name, status in statuses.items():
                if status in LIVE:
                    print(f"{status:10} {name}")


if __name__ == "__main__":
    main()
