"""The agent's settings: command-line options first, then environment variables, then the config file."""

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from floyo_agent.events import DEFAULT_TOOL
from floyo_agent.noise import DEFAULT_IGNORE_PATTERNS
from floyo_agent.sender import MAX_BATCH_EVENTS

DEFAULT_STATE_DIR = "~/.floyo-agent"
CONFIG_FILENAME = "config.toml"
SERVER_VARIABLE = "FLOYO_SERVER"
KEY_VARIABLE = "FLOYO_API_KEY"
# The server's own limit per batch.
MAX_BATCH_SIZE = 1000

# Keys the config file may set, with the TOML types they take.
_CONFIG_TYPES = {
    "server": str,
    "key": str,
    "folders": list,
    "ignore": list,
    "default_ignores": bool,
    "settle": (int, float),
    "max_backoff": (int, float),
    "batch_size": int,
    "tool": str,
}


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and how to fix it."""


@dataclass
class Settings:
    state_dir: str
    server: str | None = None
    key: str | None = None
    folders: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    default_ignores: bool = True
    settle: float = 1.0
    max_backoff: float = 300.0
    batch_size: int = MAX_BATCH_EVENTS
    tool: str = DEFAULT_TOOL
    config_path: str | None = None

    @property
    def ignore_patterns(self):
        defaults = list(DEFAULT_IGNORE_PATTERNS) if self.default_ignores else []
        return defaults + self.ignore

    def require_server(self):
        """Raise ConfigError unless the server URL and the API key are set."""
        if not self.server:
            raise ConfigError(
                f"The server URL is missing: pass --server URL, set {SERVER_VARIABLE}, "
                'or add server = "https://..." to the config file.'
            )
        if not self.key:
            raise ConfigError(
                f'The API key is missing: pass --key KEY, set {KEY_VARIABLE}, or add key = "..." to the '
                "config file. Create a key in Floyo under Settings."
            )


def load_settings(args, environ=os.environ):
    """Build Settings from parsed command-line arguments, the environment and the config file."""
    state_dir = os.path.abspath(os.path.expanduser(args.state_dir or DEFAULT_STATE_DIR))
    config_path, config = _read_config(args.config, state_dir)
    settings = Settings(state_dir=state_dir, config_path=config_path)

    settings.server = _first(getattr(args, "server", None), environ.get(SERVER_VARIABLE), config.get("server"))
    settings.key = _first(getattr(args, "key", None), environ.get(KEY_VARIABLE), config.get("key"))
    settings.folders = list(getattr(args, "folders", None) or config.get("folders", []))
    # Patterns from the config file and from --ignore add up.
    settings.ignore = list(config.get("ignore", [])) + list(getattr(args, "ignore", None) or [])
    settings.default_ignores = not getattr(args, "no_default_ignores", False) and config.get("default_ignores", True)
    settings.settle = float(_first(getattr(args, "settle", None), config.get("settle"), settings.settle))
    settings.max_backoff = float(
        _first(getattr(args, "max_backoff", None), config.get("max_backoff"), settings.max_backoff)
    )
    settings.batch_size = int(_first(getattr(args, "batch_size", None), config.get("batch_size"), settings.batch_size))
    settings.tool = _first(getattr(args, "tool", None), config.get("tool"), settings.tool)
    _validate(settings)
    return settings


def _first(*values):
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _read_config(explicit_path, state_dir):
    """Return the config file's path and contents; the default file may be missing, an explicit one not."""
    path = Path(explicit_path).expanduser() if explicit_path else Path(state_dir) / CONFIG_FILENAME
    if not path.exists():
        if explicit_path:
            raise ConfigError(f"The config file {path} does not exist. Check the path given with --config.")
        return None, {}
    try:
        with path.open("rb") as file:
            config = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"The config file {path} is not valid TOML: {error}.") from error
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {path}: {error}.") from error

    for name, value in config.items():
        expected = _CONFIG_TYPES.get(name)
        if expected is None:
            known = ", ".join(_CONFIG_TYPES)
            raise ConfigError(f"The config file {path} has an unknown setting {name!r}. Known settings: {known}.")
        # TOML booleans are not numbers here, although bool is a subclass of int in Python.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"The setting {name!r} in {path} has the wrong type: {value!r}.")
        if expected is list and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"The setting {name!r} in {path} must be a list of strings, got {value!r}.")
    return str(path), config


def _validate(settings):
    if settings.server:
        parts = urlsplit(settings.server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"The server URL {settings.server!r} is invalid: give the address of the Floyo server, "
                "such as https://floyo.example.com or http://127.0.0.1:5000."
            )
    if not 0 < settings.settle <= 60:
        raise ConfigError(f"The settle window must be more than 0 and at most 60 seconds, got {settings.settle}.")
    if not 0 < settings.max_backoff <= 86400:
        raise ConfigError(
            f"The maximum backoff must be more than 0 and at most 86400 seconds, got {settings.max_backoff}."
        )
    if not 1 <= settings.batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"The batch size must be a whole number from 1 to {MAX_BATCH_SIZE}, got {settings.batch_size}."
        )
    if not settings.tool or len(settings.tool) > 100:
        raise ConfigError(f"The tool name must be 1 to 100 characters long, got {settings.tool!r}.")
