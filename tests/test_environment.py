"""pyproject.toml and environment.yml must ask for the same packages at the same pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Instructor tools the image built from environment.yml must not carry (environment.yml's header says why).
NOT_IN_IMAGE = {"jupyterhub", "jupyter-repo2docker"}
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def normalise(requirement: str) -> tuple[str, str]:
    """``'Torch == 2.14.1'`` -> ``('torch', '==2.14.1')``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + extras["dev"] + extras["instructor"]
    return {name: pin for name, pin in map(normalise, requirements) if name not in NOT_IN_IMAGE}


def pip_section() -> list[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    return pip_sections[0]


def environment_requirements() -> dict[str, str]:
    return dict(normalise(r) for r in pip_section() if not r.startswith("-"))  # not -e . or index options


def test_pins_agree():
    assert environment_requirements() == pyproject_requirements()


def test_exact_torch_pins():
    requirements = pyproject_requirements()
    assert requirements["torch"] == "==2.14.1"
    assert requirements["torchvision"] == "==0.29.1"


def test_environment_installs_the_package_and_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- -e \.", text, re.M), "environment.yml must install qtutor itself"
    assert re.search(r"^\s*- python=3\.11\b", text, re.M)


def test_instructor_tools_are_pinned_exactly():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all("==" in requirement for requirement in extras["instructor"])


def test_environment_takes_cpu_only_torch():
    assert CPU_INDEX in pip_section(), "without the CPU wheel index, Binder's image gets the ~5 GB CUDA build"
