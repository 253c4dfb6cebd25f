"""`make dist` builds a wheel with what a Django site needs: templates, static, migrations, and
the distributions of every module the app imports."""

import ast
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "terminals" / "static" / "terminals" / "vendor" / "xterm" / "xterm.mjs"


@pytest.mark.skipif(not VENDOR.exists(), reason="vendor files are not built: run `npm run build`")
def test_the_wheel_carries_templates_static_migrations_and_translations(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("django_pod_terminals-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "terminals/py.typed",
        "terminals/migrations/0001_initial.py",
        "terminals/templates/terminals/terminal.html",
        "terminals/templates/terminals/portal.html",
        "terminals/static/terminals/js/terminal.js",
        "terminals/static/terminals/vendor/xterm/xterm.mjs",
        "terminals/static/terminals/vendor/xterm/xterm.css",
        "terminals/static/terminals/vendor/xterm/addon-fit.mjs",
        "terminals/static/terminals/vendor/asciinema-player/asciinema-player.min.js",
        # The translations, compiled (committed: a site installing the wheel needs no gettext).
        "terminals/static/terminals/js/i18n.js",
        "terminals/locale/zh_Hans/LC_MESSAGES/django.po",
        "terminals/locale/zh_Hans/LC_MESSAGES/django.mo",
        "terminals/locale/zh_Hans/LC_MESSAGES/djangojs.po",
        "terminals/locale/zh_Hans/LC_MESSAGES/djangojs.mo",
    ]:
        assert expected in names
    # The project, the emulator and the tests are not part of the reusable app.
    assert not any(name.startswith(("webshell/", "kubesim/", "tests/")) for name in names)


def imported_distributions() -> dict[str, set[str]]:
    """The third-party modules the app imports, each with the distributions that provide it."""
    modules: set[str] = set()
    for path in (ROOT / "terminals").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    provided = metadata.packages_distributions()
    return {
        module: {canonicalize_name(name) for name in provided.get(module, [])}
        for module in modules - set(sys.stdlib_module_names) - {"terminals"}
    }


def required_closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements bring, with everything they require in turn."""
    seen: set[str] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(text) for text in metadata.requires(requirement.name) or []]
    return seen


def test_every_module_the_app_imports_comes_with_the_wheel():
    """A site that installs the wheel and follows the README ("daphne" in INSTALLED_APPS, the
    app's Daphne extensions) has every module the app imports; optional ones come with an
    extra (``[postgres]``, ``[redis]``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = required_closure(project["dependencies"])
    extras = required_closure(
        [text for group in project["optional-dependencies"].values() for text in group]
    )
    for module, distributions in sorted(imported_distributions().items()):
        assert distributions, f"{module} is imported but not installed here"
        assert distributions & (required | extras), f"{module} ({distributions}) is not required"
    assert "daphne" in required
