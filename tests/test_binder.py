"""Binder and the JupyterHub image: the Dockerfile repo2docker would build from this repository installs the course.

No Docker daemon is needed: ``jupyter-repo2docker --no-build`` prints the Dockerfile it would build (what
mybinder.org and ``deploy/README.md``'s image build run). Needs the ``instructor`` extra (jupyter-repo2docker).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docker.utils.build import exclude_paths

from qtutor.models import course_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REPO2DOCKER = Path(sys.executable).parent / "jupyter-repo2docker"


@pytest.fixture(scope="module")
def dockerfile() -> str:
    result = subprocess.run(
        [str(REPO2DOCKER), "--no-build", "--no-run", "--user-id", "1000", "--user-name", "jovyan", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Building conda environment for python=3.11" in result.stderr, result.stderr[-2000:]
    return result.stdout


def test_the_environment_is_installed_after_the_repository_is_copied(dockerfile):
    """environment.yml ends with `-e .`, so it must be installed once the repository is in the image."""
    copy = dockerfile.index("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    install = dockerfile.index('env update -p ${NB_PYTHON_PREFIX} --file "environment.yml"')
    post_build = dockerfile.index("RUN ./postBuild")
    assert copy < install < post_build
    pip = next(
        d["pip"] for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"] if isinstance(d, dict)
    )
    assert "-e ." in pip and any("download.pytorch.org/whl/cpu" in line for line in pip)


def test_post_build_checks_the_course_model_with_a_call_that_exists():
    script = (ROOT / "postBuild").read_text()
    assert (ROOT / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    assert "course_checkpoint()" in script
    inspect.signature(course_checkpoint).bind()  # fails if the function no longer takes no arguments


def test_the_image_leaves_local_environments_and_caches_out():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sent = exclude_paths(str(ROOT), patterns)
    assert {"pyproject.toml", "environment.yml", "postBuild", "qtutor/__init__.py"} <= sent
    assert any(path.startswith("data/digits/") for path in sent) and any(path.startswith("notebooks/") for path in sent)
    assert not any(path.split("/")[0] in {".venv", ".cache", "build", "course", ".git"} for path in sent)
