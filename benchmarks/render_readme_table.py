"""Writes the README's results section from benchmarks/results/*.json.

    python benchmarks/render_readme_table.py           # rewrite README.md
    python benchmarks/render_readme_table.py --check   # exit 1 if it is stale

The section sits between the ``results:begin`` / ``results:end`` markers;
tests/test_readme.py fails when it differs from what the JSON files give.
"""

import argparse
import pathlib
import sys

from resnet_fast.harness.report import readme_section, replace_readme_section

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args()
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    section = readme_section(str(ROOT / "benchmarks" / "results"), "benchmarks/results")
    updated = replace_readme_section(readme, section)
    if args.check:
        if updated != readme:
            print("README.md results are stale: run python benchmarks/render_readme_table.py")
            return 1
        return 0
    readme_path.write_text(updated)
    print(f"wrote the results section of {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
