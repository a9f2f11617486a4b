"""Settings from the environment and an env file, checked at start with one readable line per problem.

Both daemons (``seminote-edge serve``, ``seminote-control serve``) build their one pydantic-settings
object here, in their entry point. Problems become :class:`SettingsInvalid`, whose ``lines`` name each
wrong setting by its environment variable, e.g.::

    SEMINOTE_EDGE_SERVER__PORT='http': Input should be a valid integer (setting server.port)
    SEMINOTE_EDGE_SERVER__PROT in /etc/seminote/edge.env: unknown setting (did you mean SEMINOTE_EDGE_SERVER__PORT?)

A missing or unreadable env file is an error (pydantic-settings alone would silently run on defaults),
and so is a key in the env file that no setting has: a typo there would otherwise be ignored. Unknown
prefixed variables in the process environment are only reported back as warnings, because other tools
share the prefixes (``SEMINOTE_CONTROL_ADDR`` is ``seminotectl``'s). The daemons exit with status 2
(configuration error; the systemd units do not restart on it: ``RestartPreventExitStatus=2``).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

__all__ = ["EXIT_CONFIG", "SettingsInvalid", "load_settings", "validation_lines"]

EXIT_CONFIG = 2  # exit status of a daemon refusing its configuration
MAX_SHOWN_VALUE_CHARS = 60
SECRET_HINTS = ("token", "key", "secret", "password")

S = TypeVar("S", bound=BaseSettings)


class SettingsInvalid(Exception):
    """The settings cannot be used; ``lines`` has one line per wrong setting, ``warnings`` the rest."""

    def __init__(self, lines: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.warnings = warnings or []


def _prefix_and_delimiter(cls: type[BaseSettings]) -> tuple[str, str]:
    config = cls.model_config
    return str(config.get("env_prefix") or ""), str(config.get("env_nested_delimiter") or "__")


def _env_name(loc: tuple[int | str, ...], prefix: str, delimiter: str) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return prefix + delimiter.join(parts).upper()


def _shown(value: Any, loc: tuple[int | str, ...]) -> str:
    if any(hint in str(part).lower() for part in loc for hint in SECRET_HINTS):
        return "<hidden>"
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_SHOWN_VALUE_CHARS:
        text = text[:MAX_SHOWN_VALUE_CHARS] + "..."
    return repr(text) if isinstance(value, str) else text


def validation_lines(exc: ValidationError, cls: type[BaseSettings]) -> list[str]:
    """One line per error of ``exc``: the environment variable, the value it had, what is wrong."""
    prefix, delimiter = _prefix_and_delimiter(cls)
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        # Errors inside a nested model set as a whole (JSON) point below the variable that holds it.
        name = _env_name(loc, prefix, delimiter) if loc else prefix.rstrip("_")
        dotted = ".".join(str(p) for p in loc)
        given = "" if err.get("type") == "missing" else f"={_shown(err.get('input'), loc)}"
        lines.append(f"{name}{given}: {err.get('msg', 'invalid')} (setting {dotted})")
    return lines


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel a field holds (directly or in ``X | None``), if any."""
    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) is not None else [annotation]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def known_setting(cls: type[BaseModel], parts: list[str]) -> bool:
    """Whether ``parts`` (lower-case, split on the nested delimiter) names a field of ``cls``."""
    model: type[BaseModel] | None = cls
    for i, part in enumerate(parts):
        if model is None:
            return False
        field = model.model_fields.get(part)
        if field is None:
            return False
        sub = _model_of(field.annotation)
        if sub is None:  # a leaf: nothing may follow (a dict-valued field would take anything)
            return i == len(parts) - 1 or get_origin(field.annotation) is dict
        model = sub
    return True  # a whole sub-model given as JSON


def _all_names(cls: type[BaseModel], prefix: str, delimiter: str) -> list[str]:
    names = []
    for name, field in cls.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is None:
            names.append(prefix + name.upper())
        else:
            names += _all_names(sub, prefix + name.upper() + delimiter, delimiter)
    return names


def unknown_keys(cls: type[BaseSettings], keys: list[str]) -> list[tuple[str, str | None]]:
    """The prefixed keys that name no setting, each with the closest real name (or None)."""
    prefix, delimiter = _prefix_and_delimiter(cls)
    names = _all_names(cls, prefix.upper(), delimiter)
    out = []
    for key in keys:
        upper = key.upper()
        if not upper.startswith(prefix.upper()):
            continue
        parts = upper[len(prefix):].lower().split(delimiter)
        if not known_setting(cls, parts):
            close = difflib.get_close_matches(upper, names, n=1, cutoff=0.8)
            out.append((key, close[0] if close else None))
    return out


def load_settings(
    cls: type[S], env_file: Path | None, environ: Mapping[str, str], other_tools: Collection[str] = ()
) -> tuple[S, list[str]]:
    """Build ``cls`` from the process environment (pydantic-settings reads it) and ``env_file``.

    ``environ`` is the process environment as the entry point sees it (``os.environ``), used to
    report unknown prefixed variables except ``other_tools`` (variables of other programs that share
    the prefix). Returns the settings and warnings; raises
    :class:`SettingsInvalid` naming every wrong setting.
    """
    problems: list[str] = []
    warnings: list[str] = []
    file_keys: list[str] = []
    if env_file is not None:
        if not env_file.is_file():
            raise SettingsInvalid([f"env file {env_file}: no such file"])
        try:
            with env_file.open("rb"):
                pass
        except OSError as exc:
            raise SettingsInvalid([f"env file {env_file}: cannot read it ({exc.strerror or exc})"]) from exc
        file_keys = [k for k in dotenv_values(env_file) if k]
        for key, close in unknown_keys(cls, file_keys):
            hint = f" (did you mean {close}?)" if close else ""
            problems.append(f"{key} in {env_file}: unknown setting{hint}")
    for key, close in unknown_keys(cls, [k for k in environ if k not in file_keys and k not in other_tools]):
        hint = f" (did you mean {close}?)" if close else ""
        warnings.append(f"{key} in the environment: not a setting of this program, ignored{hint}")
    try:
        settings = cls(_env_file=env_file) if env_file is not None else cls()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems += validation_lines(exc, cls)
        raise SettingsInvalid(problems, warnings) from exc
    if problems:
        raise SettingsInvalid(problems, warnings)
    return settings, warnings
