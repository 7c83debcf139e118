"""The optional parts of the broker and the extras that install them.

``pip install mqttbroker`` brings what the broker itself needs; a part that needs more comes
with an extra (pyproject.toml): the HTTP listener with ``mqttbroker[web]`` (aiohttp,
prometheus-client), a cluster with ``mqttbroker[cluster]`` (redis), amqtt's plugin classes
with ``mqttbroker[amqtt]``. Those libraries are imported only when the config asks for the part,
so without this check a lean install would accept such a config and fail later with an
ImportError traceback, once the broker is half started. :func:`check_extras` refuses it when the
config is loaded (``check-config`` and ``serve`` alike, before anything starts), naming the key,
its line and the ``pip install`` that brings the part.

Whether a library is there is asked with :func:`importlib.util.find_spec`, which imports nothing
(only a dotted name's parent package, and these are all top-level names).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Final

from ..errors import ConfigError, ConfigIssue
from .model import Config
from .yaml_reader import _dotted, _KeyPath

# extra -> the top-level modules of it that mqttbroker imports (its runtime needs no others)
EXTRAS: Final[Mapping[str, tuple[str, ...]]] = {
    "web": ("aiohttp", "prometheus_client"),
    "cluster": ("redis",),
    "amqtt": ("amqtt", "dacite"),  # dacite (amqtt's dependency) checks the plugins' options
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (quoted for a POSIX shell: the brackets glob)."""
    return f"pip install 'mqttbroker[{extra}]'"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # already imported, without a spec (set up by hand): it is there
        return True
    except ImportError:
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (none: the extra is installed)."""
    return [m for m in EXTRAS[extra] if not _importable(m)]


def _where(lines: Mapping[_KeyPath, int], *paths: _KeyPath) -> tuple[str, int | None]:
    """The first of ``paths`` the file gives (its dotted key and line); else the first path,
    without a line (the value came from an override or the defaults)."""
    for path in paths:
        if path in lines:
            return _dotted(path), lines[path]
    return _dotted(paths[0]), None


def check_extras(config: Config, lines: Mapping[_KeyPath, int],
                 filename: str | None = None) -> None:
    """Raise :class:`ConfigError` for each part ``config`` asks for whose extra is not
    installed: ``FILE:LINE: key: the part needs MODULES, which ... not installed: pip install ...``."""
    wants: list[tuple[str, int | None, str, str]] = []  # (key, line, the part, extra)
    if config.http.enabled:
        key, line = _where(lines, ("http", "enabled"), ("http",))
        wants.append((key, line, "the HTTP listener (dashboard, /metrics, admin API)", "web"))
    if config.cluster is not None:
        key, line = _where(lines, ("cluster",))
        wants.append((key, line, "a cluster", "cluster"))
    for spec in config.plugins:
        if spec.path.partition(".")[0] == "amqtt":  # one of amqtt's own plugin classes
            wants.append((f"plugins.{spec.path}", spec.line, "an amqtt plugin", "amqtt"))
    issues: list[ConfigIssue] = []
    for key, line, part, extra in wants:
        absent = missing_modules(extra)
        if absent:
            which = "which is" if len(absent) == 1 else "which are"
            issues.append(ConfigIssue(key, line, f"{part} needs {' and '.join(absent)}, "
                                      f"{which} not installed: {install_hint(extra)}"))
    if issues:
        raise ConfigError(issues, filename)
