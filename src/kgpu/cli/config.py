"""The CLI's saved login: server URL and API token in `~/.config/kgpu/config.json` (`$KGPU_CONFIG`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_CONFIG = Path("~/.config/kgpu/config.json")


def config_path() -> Path:
    return Path(os.environ.get("KGPU_CONFIG") or DEFAULT_CONFIG).expanduser()


def load_config() -> dict:
    """The saved settings, or {} when there are none or the file cannot be read as JSON."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(server: str, token: str) -> Path:
    """Write the login readable by this user only (it holds a secret)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**load_config(), "server": server.rstrip("/"), "token": token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(path, 0o600)  # an older file may have been created with looser permissions
    return path
