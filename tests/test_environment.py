"""pyproject.toml and environment.yml must ask for the same packages at the same pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> tuple[str, str]:
    """``'Torch == 2.14.1'`` -> ``('torch', '==2.14.1')``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(normalise(r) for r in requirements)


def environment_requirements() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    return dict(normalise(r) for r in pip_sections[0] if not r.startswith("-e"))


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
