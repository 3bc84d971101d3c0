"""Typed stage configs read from ``params.yaml``.

``params.yaml`` has one section per stage (``prepare``, ``train``, ``evaluate``) plus a
shared ``paths`` section. Each stage's section is validated by a pydantic model that
mirrors it field for field (unknown keys are errors), command-line overrides use dotted
keys (``train.steps=10``), and the resolved config is written next to the stage outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from infra.paths import PathsConfig, ProjectPaths

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class StrictConfig(BaseModel):
    """Base of every typed config section: unknown keys are errors (a typo in
    ``params.yaml`` or a ``--set`` override fails instead of being ignored)."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A ``params.yaml`` section or an override is invalid."""


def load_params(path: Path) -> dict[str, Any]:
    """Read ``params.yaml`` as a dict; raises :class:`ConfigError` when missing or malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"params file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``params`` with ``key.sub=value`` overrides applied.

    Values are parsed as YAML (``10`` → int, ``[1,2]`` → list, ``null`` → None).
    Raises :class:`ConfigError` on a malformed override.
    """
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def build(cls: type[ConfigT], section: dict[str, Any] | None, name: str) -> ConfigT:
    """Validate one section into ``cls``; :class:`ConfigError` names each bad setting by its
    dotted key (``train.aei_net.data.intra: …``), one line per problem."""
    try:
        return cls.model_validate(section or {})
    except ValidationError as e:
        raise ConfigError(
            f"invalid `{name}` settings in params:\n" + describe_validation_error(e, name)
        ) from e


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """One line per pydantic error: ``<prefix>.<dotted key>: <message>``."""
    lines = []
    for err in error.errors():
        key = ".".join([prefix, *(str(p) for p in err["loc"])])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_stage(
    cls: type[ConfigT],
    section: str,
    params_path: Path,
    overrides: list[str] | None = None,
) -> tuple[ConfigT, ProjectPaths]:
    """Load one stage's typed config and the resolved project paths.

    Parameters
    ----------
    cls : pydantic model class mirroring ``params.yaml[section]``.
    section : section name, e.g. ``"train"``.
    params_path : path of ``params.yaml``; relative paths in it resolve against its folder.
    overrides : dotted ``key=value`` strings applied before validation.
    """
    params = apply_overrides(load_params(params_path), overrides or [])
    paths_cfg = build(PathsConfig, params.get("paths"), "paths")
    paths = ProjectPaths.resolve(paths_cfg, base=Path(params_path).resolve().parent)
    return build(cls, params.get(section), section), paths


def resolved_dict(cfg: BaseModel, paths: ProjectPaths, section: str) -> dict[str, Any]:
    """The stage config and the ``paths`` settings as given (relative paths stay relative,
    so the file is the same on every machine), as plain YAML-able data."""
    settings = paths.settings or PathsConfig()
    return {"paths": settings.model_dump(mode="json"), section: cfg.model_dump(mode="json")}


def write_resolved(cfg: BaseModel, paths: ProjectPaths, section: str, out_dir: Path) -> Path:
    """Write ``config.yaml`` (resolved stage config) into ``out_dir``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "config.yaml"
    target.write_text(yaml.safe_dump(resolved_dict(cfg, paths, section), sort_keys=False))
    return target


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists kept as values), for tracker params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
