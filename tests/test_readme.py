"""The README's usage example runs as written."""

import pathlib
import re


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    assert blocks, "no python example in README.md"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


# --- resnet-fast command ---
ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_results_match_the_committed_json():
    from resnet_fast.harness.report import readme_section, replace_readme_section

    readme = (ROOT / "README.md").read_text()
    section = readme_section(str(ROOT / "benchmarks" / "results"), "benchmarks/results")
    assert replace_readme_section(readme, section) == readme, (
        "README.md's results section is stale: run python benchmarks/render_readme_table.py"
    )
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section):
        assert (ROOT / image).is_file(), f"README shows {image}, which is not committed"


def test_readme_resnet_fast_commands_parse():
    # Each `resnet-fast ...` line of the README's bash blocks is a valid
    # command line (running them is CI's job and the benchmarks').
    from resnet_fast.cli.main import build_parser

    commands = [
        line.split("resnet-fast", 1)[1].split()
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
        for line in block.splitlines()
        if "resnet-fast " in line
    ]
    assert commands, "the README shows no resnet-fast command"
    for argv in commands:
        build_parser().parse_args(argv)


# --- end resnet-fast command ---
