"""The README's usage example runs as written."""

import pathlib
import re


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    assert blocks, "no python example in README.md"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
