"""`chalice package` builds a Lambda zip that carries chalice_app/ and whose app imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_chalice_package_zip_contains_chalice_app_and_imports(tmp_path):
    out = tmp_path / "pkg"
    subprocess.run(
        [str(Path(sys.executable).parent / "chalice"), "package", "--stage", "dev", str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_DEFAULT_REGION": "ap-northeast-2"},
    )
    zpath = out / "deployment.zip"
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unzipped")
    assert "app.py" in names
    assert "chalice_app/__init__.py" in names
    assert "chalice_app/keys.py" in names
    probe = subprocess.run(
        [sys.executable, "-c", "import app, chalice_app.keys; print(app.app.app_name)"],
        cwd=tmp_path / "unzipped", capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "unzipped") + ":" + ":".join(p for p in sys.path if "site-packages" in p)},
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "supernoba"


def test_every_file_the_engine_loads_as_a_resource_is_package_data():
    """A wheel (`pip install .`) carries only .py files and package-data: the engine service
    reads its Lua scripts through importlib.resources and would not start without them."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engine_pkg"]
    pkg = REPO / "engine_pkg"
    resources = [p.relative_to(pkg).as_posix() for p in (pkg / "service").glob("*.lua")]
    assert resources, "the engine service's Lua scripts"
    missing = [r for r in resources if not any(fnmatch.fnmatch(r, pat) for pat in patterns)]
    assert missing == []
