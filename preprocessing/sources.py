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


def _walk(root: Path) -> Iterator[str]:
    """Files under ``root`` (symlinks included, dangling ones too, hidden ones too), sorted,
    as POSIX paths relative to ``root``."""
    top = str(root)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = dirpath[len(top) + 1 :].replace(os.sep, "/")
        for name in sorted(filenames):
            yield f"{rel_dir}/{name}" if rel_dir else name


def _clean_relative(listed: str) -> str | None:
    """``listed`` as ``PurePosixPath(listed).as_posix()`` prints it (no ``.`` or empty parts)
    when it is relative and has no ``..`` part; None otherwise."""
    parts = [p for p in listed.split("/") if p and p != "."]
    if listed.startswith("/") or not parts or ".." in parts:
        return None
    return "/".join(parts)


def _suffix(name: str) -> str:
    """The extension of a file name, as ``PurePath.suffix`` gives it (``""`` for ``.x``)."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


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


class _Lister:
    """Makes the :class:`InputItem` rows of one source whose files lie under ``root``.

    What is the same for every file (the stored form of ``root``, the extension set, one
    string per identity label) is computed once, and a file is handled as strings, so a
    source of millions of files lists in seconds per million rather than minutes.
    """

    def __init__(self, cfg: SourceConfig, paths: ProjectPaths, root: Path):
        self.cfg, self.data_root, self.root = cfg, paths.data_root, root
        self.extensions = {e.lower() for e in cfg.extensions}
        stored = data_relative(root, paths.data_root)
        if os.path.isabs(stored):
            self.prefix = f"{root}/"
        else:
            self.prefix = "" if stored == "." else f"{stored}/"
        self._labels: dict[str | None, str | None] = {}

    def label(self, raw: str | None) -> str | None:
        """:func:`_label`, one string object per identity."""
        if raw not in self._labels:
            self._labels[raw] = _label(self.cfg.name, raw)
        return self._labels[raw]

    def under_root(
        self, rel: str, listed: str, identity: str | None, mask: Path | None = None
    ) -> InputItem:
        """The item of the file ``root/rel`` (``rel`` a clean relative POSIX path)."""
        return self._make(self.prefix + rel, listed, rel.rsplit("/", 1)[-1], identity, mask)

    def at(self, path: Path, listed: str, identity: str | None) -> InputItem:
        """The item of a file given by its full path (absolute listings, ``..`` parts)."""
        stored = data_relative(path, self.data_root)
        return self._make(stored, listed, path.name, identity, None)

    def _make(
        self, stored: str, listed: str, name: str, identity: str | None, mask: Path | None
    ) -> InputItem:
        reason, detail = None, ""
        hidden = next(
            (p for p in listed.split("/") if p.startswith(".") and p not in (".", "..")), None
        )
        if hidden:
            reason, detail = Reason.HIDDEN_FILE, f"hidden name {hidden!r}"
        elif _suffix(name).lower() not in self.extensions:
            reason = Reason.UNSUPPORTED_EXTENSION
            detail = f"extension {_suffix(name) or '(none)'!r} not in {self.cfg.extensions}"
        return InputItem(
            key=make_key(self.cfg.name, listed),
            source=self.cfg.name,
            path=stored,
            listed=listed,
            identity=identity,
            mask_path=data_relative(mask, self.data_root) if mask is not None else None,
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
    lister = _Lister(cfg, paths, root)
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
            identity = lister.label(row.get("identity"))
            if (rel := _clean_relative(listed)) is not None:
                items.append(lister.under_root(rel, listed, identity))
            else:
                p = Path(listed)
                items.append(lister.at(p if p.is_absolute() else root / p, listed, identity))
    return items


def read_vggface2(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """VGGFace2 layout ``<path>/<identity>/<image>``: the identity is the first folder under
    ``path``; files directly in ``path`` have no identity."""
    root = _folder(cfg, paths)
    lister = _Lister(cfg, paths, root)
    items = []
    for rel in _walk(root):
        first, sep, _ = rel.partition("/")
        items.append(lister.under_root(rel, rel, lister.label(first) if sep else None))
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
    lister = _Lister(cfg, paths, root)
    items = []
    for rel in _walk(root):
        name = rel.rsplit("/", 1)[-1]
        mask = masks / f"{Path(name).stem}.png" if masks is not None else None
        identity = lister.label(ids.get(name) or ids.get(rel))
        mask = mask if mask and mask.is_file() else None
        items.append(lister.under_root(rel, rel, identity, mask))
    return items


def read_folder(cfg: SourceConfig, paths: ProjectPaths) -> list[InputItem]:
    """Any folder tree; no identities."""
    root = _folder(cfg, paths)
    lister = _Lister(cfg, paths, root)
    return [lister.under_root(rel, rel, None) for rel in _walk(root)]


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
