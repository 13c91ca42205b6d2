"""Run options from a file: ``echoswarm.toml`` (a ``[run]`` table) or a Locust-style
``key = value`` file. Command-line flags override the file; the file overrides built-in defaults.

``./echoswarm.toml`` is read automatically when present (like Locust reads ``./locust.conf``);
``--config PATH`` names another file. Keys are the long flag names, with ``-`` or ``_``::

    [run]
    locustfile = "locustfiles/audio_stream.py"
    workers = 2
    users = 300
    spawn-rate = 100
    time = "60s"
    slo = ["grpc:bidi msg:p99<20ms", "*:*:error_rate<0.1%"]
    locust-args = ["--frame-bytes", "3200"]

The same in Locust's conf style (repeat ``slo`` lines; lists may also be ``[a, b]``)::

    workers = 2
    users = 300
    slo = grpc:bidi msg:p99<20ms
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_FILE = Path("echoswarm.toml")

# key -> type: int, float, str, bool, or list (of str)
KEYS: dict[str, type] = {
    "locustfile": str,
    "workers": int,
    "users": int,
    "spawn_rate": float,
    "time": str,
    "results": str,
    "slo": list,
    "web": bool,
    "web_port": int,
    "locust_args": list,
    "report": bool,
    "master_timeout_s": float,
    "wan": str,
    "instrument_overhead": str,
}


class ConfigError(ValueError):
    """A config file that cannot be read or has a bad key/value (a usage error)."""


def load(path: Path | None) -> dict[str, Any]:
    """Options from ``path`` (or ``./echoswarm.toml`` if it exists); {} if there is none."""
    explicit = path is not None
    path = path or DEFAULT_FILE
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    raw = _parse_toml(path, text) if path.suffix == ".toml" else _parse_conf(path, text)
    return {key: _coerce(path, key, value) for key, value in raw.items()}


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = data.get("run", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [run] must be a table")
    return {_key(path, k): v for k, v in table.items() if not isinstance(v, dict)}


def _parse_conf(path: Path, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected key = value")
        k, v = (part.strip() for part in line.split("=", 1))
        key = _key(path, k, lineno)
        if KEYS[key] is list:
            items = _conf_list(v)
            out.setdefault(key, []).extend(items)
        else:
            out[key] = v
    return out


def _conf_list(value: str) -> list[str]:
    if value.startswith("[") and value.endswith("]"):
        return [item.strip().strip("'\"") for item in value[1:-1].split(",") if item.strip()]
    return [value] if "<" in value or ">" in value else shlex.split(value)


def _key(path: Path, key: str, lineno: int | None = None) -> str:
    norm = key.strip().lstrip("-").replace("-", "_")
    if norm not in KEYS:
        where = f"{path}:{lineno}" if lineno else str(path)
        raise ConfigError(f"{where}: unknown option {key!r} (known: {', '.join(sorted(KEYS))})")
    return norm


def _coerce(path: Path, key: str, value: Any) -> Any:
    kind = KEYS[key]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if kind is list:
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list):
                raise ValueError(value)
            return [str(v) for v in value]
        if kind is int and isinstance(value, float):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {key} = {value!r} is not a valid {kind.__name__}") from None
