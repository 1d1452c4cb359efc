"""The README's Python example runs as documented."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows a Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_readme_shows_make_commands_first():
    text = README.read_text()
    assert text.index("make run") < text.index("## Usage") and "make test" in text and "make ui" in text
