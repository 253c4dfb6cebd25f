"""`make dist` builds a wheel with what a Django site needs: templates, static, migrations."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "terminals" / "static" / "terminals" / "vendor" / "xterm" / "xterm.mjs"


@pytest.mark.skipif(not VENDOR.exists(), reason="vendor files are not built: run `npm run build`")
def test_the_wheel_carries_templates_static_and_migrations(tmp_path):
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
    ]:
        assert expected in names
    # The project, the emulator and the tests are not part of the reusable app.
    assert not any(name.startswith(("webshell/", "kubesim/", "tests/")) for name in names)
