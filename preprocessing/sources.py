"""Source readers: turn a configured source into a list of :class:`InputItem`."""

from __future__ import annotations

import csv
from pathlib import Path

from infra.config import ConfigError
from infra.paths import ProjectPaths
from preprocessing.config import SourceConfig
from preprocessing.records import InputItem, make_key


def read_identity_csv(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """Read a CSV with columns ``path,identity`` (extra columns ignored).

    Image paths are relative to ``cfg.root`` (default: the CSV's folder) unless absolute.
    Identity labels are prefixed with the source name (``lfw:Ariel_Sharon`` stays as is
    when it already carries a prefix). Raises :class:`ConfigError` when the file is missing
    or lacks the ``path`` column.
    """
    csv_path = paths.data_path(cfg.path)
    if not csv_path.is_file():
        raise ConfigError(f"source {cfg.name!r}: CSV {csv_path} not found")
    root = paths.data_path(cfg.root) if cfg.root else csv_path.parent
    items = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ConfigError(
                f"source {cfg.name!r}: {csv_path} needs a 'path' column, has {reader.fieldnames}"
            )
        for row in reader:
            listed = (row.get("path") or "").strip()
            if not listed:
                continue
            label = (row.get("identity") or "").strip() or None
            if label is not None and ":" not in label:
                label = f"{cfg.name}:{label}"
            p = Path(listed)
            items.append(
                InputItem(
                    key=make_key(cfg.name, listed),
                    source=cfg.name,
                    path=str(p if p.is_absolute() else root / p),
                    listed=listed,
                    identity=label,
                )
            )
    return items


READERS = {"identity_csv": read_identity_csv}


def read_sources(sources: list[SourceConfig], paths: ProjectPaths) -> list[InputItem]:
    """All inputs of all sources, in listing order."""
    items: list[InputItem] = []
    for cfg in sources:
        items.extend(READERS[cfg.kind](cfg, paths))
    return items
