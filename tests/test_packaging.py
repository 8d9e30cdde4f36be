"""Packaging: ``python -m edgecl`` runs the CLI, and the wheel holds every file pyproject names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "argv, usage",
    [(["--help"], "usage: edgecl "), (["pretrain", "--help"], "usage: edgecl pretrain ")],
)
def test_python_dash_m_edgecl_runs_the_cli(argv, usage):
    """host/ddp.py documents ``torchrun ... -m edgecl pretrain``: the module must run."""
    out = subprocess.run(
        [sys.executable, "-m", "edgecl", *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(usage)


def test_python_dash_m_edgecl_passes_the_exit_code_on():
    out = subprocess.run(
        [sys.executable, "-m", "edgecl", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_every_package_data_pattern_matches_a_file():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["edgecl"]
    assert "py.typed" in patterns  # PEP 561: the type hints are part of the API
    missing = [p for p in patterns if not any((ROOT / "edgecl").glob(p))]
    assert not missing, f"pyproject package-data names files that do not exist: {missing}"


def test_the_wheel_holds_the_package_data_and_the_entry_points(tmp_path):
    """What ``make wheel`` builds (here without build isolation: no index needed)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject's build-system minimum
        pytest.skip(f"setuptools {setuptools.__version__} cannot build this pyproject offline")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "edgecl", src / "edgecl", ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", "-w", str(tmp_path / "dist")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("edgecl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"edgecl/__main__.py", "edgecl/py.typed", "edgecl/data/watch_imu.npz"}
    expected |= {f"edgecl/bundles/default/{f}" for f in ("manifest.json", "model.onnx")}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("tests/", "tools/")) for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "edgecl = edgecl.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
