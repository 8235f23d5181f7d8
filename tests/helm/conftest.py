"""The helm binary, built once by scripts/install-helm.sh (cached: instant after the first build)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helm.render import REPO, Helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    result = subprocess.run(["bash", str(REPO / "scripts" / "install-helm.sh")], capture_output=True, text=True,
                            timeout=1200, check=False)
    assert result.returncode == 0, f"scripts/install-helm.sh failed:\n{result.stderr}"
    binary = Path(result.stdout.strip().splitlines()[-1])
    assert binary.is_file(), f"install-helm.sh printed {binary}, which is not a file"
    return Helm(binary)
