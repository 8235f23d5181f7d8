"""Reading JSON Lines files that a running process may be writing to at that very moment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def complete_json_lines(path: Path) -> list[dict[str, Any]]:
    """The newline-terminated lines of ``path``, parsed; a line still being written (no newline yet) is left for
    the next read, as a tailing reader would. A missing file reads as empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1]]
