"""Reading a hardware target's constants file (``configs/targets/<target>.yaml``).

The one place in the core that parses YAML: a target's factory hands the mapping read here
to its own validation, so every target reports a missing or malformed file the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mpsctl.errors import UserError


def read_constants_file(path: Path, target: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; a one-line UserError naming ``target`` when the
    file is missing, unreadable or not a mapping."""
    if not path.is_file():
        raise UserError(f"{path}: {target} constants file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"{path}: cannot read {target} constants: {reason}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {target} constant names to integers")
    return data
