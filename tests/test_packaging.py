"""Packaging: one version, py.typed and LICENSE in the wheel, the git revision of skiplab's own
checkout only, the XDG cache folder, CITATION.cff."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import skiplab
from skiplab.data.cache import default_cache_dir
from skiplab.provenance import git_revision

ROOT = Path(__file__).resolve().parents[1]


def load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text())


def test_the_version_is_written_once():
    project = load_toml(ROOT / "pyproject.toml")
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "skiplab.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", skiplab.__version__)
    assert not re.search(r"(?m)^version:", (ROOT / "CITATION.cff").read_text())


def test_citation_and_licence_files():
    cff = (ROOT / "CITATION.cff").read_text()
    for key in ("cff-version: 1.2.0", "message:", "title:", "authors:", "license: MIT"):
        assert key in cff
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert load_toml(ROOT / "pyproject.toml")["project"]["license"] == "MIT"


def test_wheel_has_version_types_and_licence_and_no_foreign_git_revision(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src-copy"  # build from a copy: the checkout gets no build/ or egg-info
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        ["cp", "-r", str(ROOT / "src"), str(src / "src")], check=True, capture_output=True
    )
    wheels = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", "-w", str(wheels), str(src)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("skiplab-*.whl")
    assert wheel.name.startswith(f"skiplab-{skiplab.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        zf.extractall(tmp_path / "repo" / "site")
    assert "skiplab/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Version: {skiplab.__version__}" in meta and "License-Expression: MIT" in meta
    # Installed inside some other git repository (a venv in a project folder): no revision.
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
    commit = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit"]
    subprocess.run([*commit, "-q", "-m", "m"], check=True)
    code = "from skiplab.provenance import git_revision; print(git_revision())"
    env = {**os.environ, "PYTHONPATH": str(repo / "site")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_git_revision_of_the_checkout():
    if not (ROOT / ".git").exists() or Path(skiplab.__file__).resolve().parent != (
        ROOT / "src" / "skiplab"
    ):
        pytest.skip("not running from a git checkout of skiplab")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert re.fullmatch(head + r"(\+dirty)?", git_revision())


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SKIPLAB_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "skiplab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "skiplab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "skiplab"
    monkeypatch.chdir(tmp_path)
    assert not default_cache_dir().is_relative_to(Path.cwd() / ".cache")
