"""The Elasticsearch a benchmark runs against: the one given with ``--es``, or one installed and started here
(``scripts/install-elasticsearch.sh`` / ``start-elasticsearch.sh``) and stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def elasticsearch(url: str | None, port: str, heap: str | None = None) -> Iterator[str]:
    """``url`` as given, else the URL of a single node started on ``port`` (data in .cache/es-bench-<port>)."""
    if url is not None:
        yield url
        return
    env = {**os.environ, "ES_PORT": port, "ES_DATA": str(ROOT / f".cache/es-bench-{port}"),
           **({"ES_HEAP": heap} if heap else {})}
    subprocess.run(["bash", str(ROOT / "scripts/install-elasticsearch.sh")], check=True, env=env)
    subprocess.run(["bash", str(ROOT / "scripts/start-elasticsearch.sh")], check=True, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/stop-elasticsearch.sh")], check=False, env=env)
