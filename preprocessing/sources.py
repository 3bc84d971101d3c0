"""Source readers: turn a configured source into a list of :class:`InputItem`.

Every file a reader lists becomes one manifest row. Folder readers list every regular file
in sorted order, hidden ones too; a hidden file (or one in a hidden folder: a name starting
with ``.``, such as ``.DS_Store``) is listed as rejected (``hidden_file``), and so is a file
whose extension is not an image extension (``unsupported_extension``), rather than being
silently skipped. Item paths
are stored relative to ``paths.data_root`` (:func:`data_relative`), so the stage's outputs
hold no absolute path of the machine; :meth:`ProjectPaths.data_path` turns them back into
files.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

from infra.config import ConfigError
from infra.paths import ProjectPaths
from preprocessing.config import SourceConfig
from preprocessing.records import InputItem, Reason, make_key


def _label(source: str, raw: str | None) -> str | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    return raw if ":" in raw else f"{source}:{raw}"


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` (symlinks included, dangling ones too, hidden ones too), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _hidden_part(listed: str) -> str | None:
    """The first hidden name (``.x``) among the parts of a listed path, or None."""
    return next((p for p in Path(listed).parts if p.startswith(".") and p not in (".", "..")), None)


def data_relative(path: Path, data_root: Path) -> str:
    """How a file is stored in the manifest: relative to ``data_root`` when under it.

    Parameters
    ----------
    path : absolute file path as a reader found it.
    data_root : ``paths.data_root`` (absolute).

    Returns
    -------
    str
        The POSIX path relative to ``data_root`` when ``path`` lies under it (no ``..``
        part), else ``path`` unchanged (absolute). ``ProjectPaths.data_path`` of the result
        is ``path`` again.
    """
    try:
        rel = Path(path).relative_to(data_root)
    except ValueError:
        return str(path)
    return str(path) if ".." in rel.parts else rel.as_posix()


def _item(
    cfg: SourceConfig,
    paths: ProjectPaths,
    path: Path,
    listed: str,
    identity: str | None,
    mask: Path | None = None,
) -> InputItem:
    reason, detail = None, ""
    if hidden := _hidden_part(listed):
        reason, detail = Reason.HIDDEN_FILE, f"hidden name {hidden!r}"
    elif path.suffix.lower() not in {e.lower() for e in cfg.extensions}:
        reason = Reason.UNSUPPORTED_EXTENSION
        detail = f"extension {path.suffix or '(none)'!r} not in {cfg.extensions}"
    return InputItem(
        key=make_key(cfg.name, listed),
        source=cfg.name,
        path=data_relative(path, paths.data_root),
        listed=listed,
        identity=identity,
        mask_path=data_relative(mask, paths.data_root) if mask is not None else None,
        reason=reason,
        detail=detail,
    )


def _folder(cfg: SourceConfig, paths: ProjectPaths) -> Path:
    root = paths.data_path(cfg.path)
    if not root.is_dir():
        raise ConfigError(f"source {cfg.name!r}: folder {root} not found")
    return root


def read_identity_csv(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """CSV with columns ``path,identity`` (extra columns ignored; rows with an empty path are
    not files and are skipped). Paths are relative to ``cfg.root`` (default: the CSV's
    folder) unless absolute. Raises ConfigError for a missing file or ``path`` column."""
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
            if listed:
                p = Path(listed)
                path = p if p.is_absolute() else root / p
                items.append(_item(cfg, paths, path, listed, _label(cfg.name, row.get("identity"))))
    return items


def read_vggface2(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """VGGFace2 layout ``<path>/<identity>/<image>``: the identity is the first folder under
    ``path``; files directly in ``path`` have no identity."""
    root = _folder(cfg, paths)
    items = []
    for f in _walk(root):
        rel = f.relative_to(root)
        identity = _label(cfg.name, rel.parts[0]) if len(rel.parts) > 1 else None
        items.append(_item(cfg, paths, f, rel.as_posix(), identity))
    return items


def _read_identity_file(path: Path) -> dict[str, str]:
    """``<image file> <identity>`` per line (whitespace or comma separated)."""
    mapping = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = re.split(r"[,\s]+", line.strip())
        if len(parts) < 2:
            raise ConfigError(f"{path}:{n}: expected `<image> <identity>`, got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping


def read_celebahq(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """CelebA-HQ / CelebAMask-HQ: images in ``path``; optional ``masks`` folder holding
    ``<image stem>.png`` label maps (pixel = class id) and an optional ``identities``
    file. Images without a mask or identity keep None for it."""
    root = _folder(cfg, paths)
    masks = paths.data_path(cfg.masks) if cfg.masks else None
    if masks is not None and not masks.is_dir():
        raise ConfigError(f"source {cfg.name!r}: masks folder {masks} not found")
    ids = _read_identity_file(paths.data_path(cfg.identities)) if cfg.identities else {}
    items = []
    for f in _walk(root):
        rel = f.relative_to(root).as_posix()
        mask = masks / f"{f.stem}.png" if masks is not None else None
        identity = _label(cfg.name, ids.get(f.name) or ids.get(rel))
        mask = mask if mask and mask.is_file() else None
        items.append(_item(cfg, paths, f, rel, identity, mask))
    return items


def read_folder(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """Any folder tree; no identities."""
    root = _folder(cfg, paths)
    return [_item(cfg, paths, f, f.relative_to(root).as_posix(), None) for f in _walk(root)]


READERS = {
    "identity_csv": read_identity_csv,
    "vggface2": read_vggface2,
    "celebahq": read_celebahq,
    "folder": read_folder,
}


def read_sources(sources: list[SourceConfig], paths: ProjectPaths) -> list[InputItem]:
    """All inputs of all sources, in listing order.

    Parameters
    ----------
    sources : the configured sources (``prepare.sources``).
    paths : project paths; source paths resolve against ``paths.data_root`` and item paths
        are stored relative to it (:func:`data_relative`).

    Returns
    -------
    list[InputItem]
        One item per listed file; files a reader rejects carry their ``reason``.

    Raises
    ------
    ConfigError
        A source's folder, CSV or identity file is missing or malformed.
    """
    items: list[InputItem] = []
    for cfg in sources:
        items.extend(READERS[cfg.kind](cfg, paths))
    return items
