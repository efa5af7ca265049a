"""The documentation site: it builds in strict mode, its configuration reference is what `coldstart config` prints,
and its Python scripts are the README's (which tests/test_python_api.py runs)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coldstart.cli import main

ROOT = Path(__file__).resolve().parents[1]


def config_reference():
    """The mkdocs hook that writes the configuration reference, imported from its file (docs/ is no package)."""
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs" / "hooks" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_the_site_builds_in_strict_mode(tmp_path):
    packages = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    site = tmp_path / "site"
    # Material prints a notice about MkDocs 2.0 on every build unless told not to
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    # strict mode fails on a warning: a broken link or anchor, a page left out of the nav, an unresolved `:::`
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    page = (site / "configuration" / "index.html").read_text()
    hook = config_reference()
    for key in hook.parse_rows(hook.markdown()):
        assert f"<code>{key}</code>" in page, key
    api = (site / "python-api" / "index.html").read_text()
    assert 'id="coldstart.cadft.CADFTTrainer"' in api and 'id="coldstart.compatibility.score"' in api


def test_the_configuration_reference_lists_every_field_with_the_default_coldstart_config_prints(capsys):
    assert main(["config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    hook = config_reference()
    reference = hook.parse_rows(hook.markdown())

    def leaves(node: dict, prefix: str = "") -> dict:
        """Dotted keys of the printed config: a mapping is a section unless the reference lists it as one field
        (rl.rewards, warmup.trainer)."""
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted not in reference:
                out.update(leaves(value, dotted + "."))
            else:
                out[dotted] = value
        return out

    fields = leaves(printed)
    assert sorted(reference) == sorted(fields)
    for key, value in fields.items():
        assert yaml.safe_load(reference[key]) == value, key


def test_the_python_api_page_shows_the_readme_scripts():
    readme = python_blocks(ROOT / "README.md")
    assert readme and python_blocks(ROOT / "docs" / "python-api.md") == readme
