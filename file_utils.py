"""File helpers only the data scripts need (the ones the trainer and generate.py share live in common.py)."""
from __future__ import annotations

import re
from pathlib import Path


def temp_file_pattern(path: Path) -> re.Pattern:
    """The names common.temp_file_beside(path) makes (mkstemp adds 8 characters of [a-z0-9_])."""
    return re.compile(rf"\.tmp-{re.escape(path.name)}\.[a-z0-9_]{{8}}")
