"""pyproject.toml: its runtime dependencies match requirements.txt, and ``pip install -e`` of the
checkout (offline) makes ``import pet`` work from any directory, pointing into the checkout."""
import os
import re
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()


def test_dependencies_match_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    test_only = {"pytest"}
    assert {requirement_name(d) for d in project["dependencies"]} == \
        {requirement_name(line) for line in pinned} - test_only
    # The versions requirements.txt pins hard stay pinned; every pinned version satisfies the rest.
    assert {"torch==2.13.0", "tensorboard==2.21.0"} <= set(project["dependencies"])
    assert [requirement_name(d) for d in project["optional-dependencies"]["test"]] == ["pytest"]
    assert project["requires-python"] == ">=3.11"


@pytest.mark.slow
def test_editable_install_imports_pet_from_the_checkout_anywhere(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # This interpreter is itself a venv: ``--system-site-packages`` would expose the base Python's
    # packages, not the ones installed here. A .pth file lists this environment's site-packages
    # instead, so the new venv sees the same torch, pip and setuptools (the build backend,
    # used as is: --no-build-isolation; --no-index: nothing is downloaded).
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "running_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    leftovers = lambda: {p.name for p in REPO.iterdir() if p.name == "build" or p.name.endswith(".egg-info")}
    before = leftovers()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--no-index", "--disable-pip-version-check", "-e", str(REPO)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "Successfully installed pet-solver-0.1.0" in install.stdout
    assert leftovers() == before  # the build left nothing in the checkout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = subprocess.run([str(python), "-c", "import pet, pet.lib.utils.optimizer; print(pet.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()) == REPO / "pet" / "__init__.py"
    # Without the install, the same interpreter does not find pet: the install did it.
    bare = subprocess.run([sys.executable, "-I", "-c", "import pet"], cwd=elsewhere,
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'pet'" in bare.stderr
