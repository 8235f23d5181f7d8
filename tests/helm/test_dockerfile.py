"""The image definition agrees with the project and the chart (no Docker here to build it; see docs/helm.md)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from tests.helm.render import REPO, Helm, container, one

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_image_user_is_the_chart_default_non_root_user(helm: Helm) -> None:
    manifests = helm.manifests()
    uid = container(manifests, "audit")["securityContext"]["runAsUser"]
    gid = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]
    assert _instructions("USER") == [f"{uid}:{gid}"]
    assert f"--uid {uid}" in DOCKERFILE and f"--gid {gid}" in DOCKERFILE


def test_image_python_satisfies_the_project_requirement() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    image = re.search(r"python:(\d+)\.(\d+)", DOCKERFILE)
    assert image is not None
    minimum = tuple(int(x) for x in re.findall(r"\d+", project["requires-python"])[:2])
    assert (int(image.group(1)), int(image.group(2))) >= minimum


def test_chart_commands_are_console_scripts_the_image_installs(helm: Helm) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    manifests = helm.manifests()
    for name in ("exporter", "audit"):
        assert container(manifests, name)["command"][0] in scripts


def test_build_context_holds_every_copied_source() -> None:
    copies = [line.split()[:-1] for line in _instructions("COPY") if "--from=" not in line]
    sources = [src.rstrip("/") for srcs in copies for src in srcs]
    assert {"pyproject.toml", "exporter", "audit"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    assert _dockerignored(".venv") and _dockerignored("tests")


def test_image_exposes_the_chart_default_ports(helm: Helm) -> None:
    manifests = helm.manifests()
    ports = {p["containerPort"] for n in ("exporter", "audit") for p in container(manifests, n)["ports"]}
    assert {int(p) for p in _instructions("EXPOSE")[0].split()} == ports
