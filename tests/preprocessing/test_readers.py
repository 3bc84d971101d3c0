from pathlib import Path

import pytest

from infra.config import ConfigError
from infra.paths import PathsConfig, ProjectPaths
from preprocessing.config import SourceConfig
from preprocessing.records import make_key
from preprocessing.sources import data_relative, read_sources
from tests.conftest import FACES


def _paths(root: Path) -> ProjectPaths:
    return ProjectPaths.resolve(PathsConfig(data_root=str(root)), base=root)


def test_vggface2_and_folder_layouts(tmp_path):
    for rel in [
        "n001/0001_01.jpg",
        "n001/0002_01.jpg",
        "n002/x y é.png",
        "top.jpg",
        "n002/notes.txt",
        ".hidden/skip.jpg",
        "n001/.DS_Store",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    vgg = SourceConfig(name="vgg", kind="vggface2", path=str(tmp_path))
    items = read_sources([vgg], _paths(tmp_path))
    got = {i.listed: (i.identity, i.reason) for i in items}
    assert got == {
        "n001/0001_01.jpg": ("vgg:n001", None),
        "n001/0002_01.jpg": ("vgg:n001", None),
        "n002/notes.txt": ("vgg:n002", "unsupported_extension"),
        "n002/x y é.png": ("vgg:n002", None),
        "top.jpg": (None, None),
        ".hidden/skip.jpg": ("vgg:.hidden", "hidden_file"),  # every file is a manifest row
        "n001/.DS_Store": ("vgg:n001", "hidden_file"),
    }
    assert items[0].key == make_key("vgg", items[0].listed)
    folder = SourceConfig(name="plain", kind="folder", path=str(tmp_path))
    assert all(i.identity is None for i in read_sources([folder], _paths(tmp_path)))


def test_celebahq_with_masks_and_identities(tmp_path):
    root = FACES / "celebamask_hq_ce7454_train"
    names = sorted(p.name for p in (root / "images").iterdir())[:2]
    ids = tmp_path / "identity.txt"
    ids.write_text(f"{names[0]} 17\n# comment\n\n{names[1]},42\n")
    cfg = SourceConfig(
        name="chq",
        kind="celebahq",
        path=str(root / "images"),
        masks=str(root / "masks"),
        identities=str(ids),
    )
    items = read_sources([cfg], _paths(tmp_path))
    assert len(items) == 800
    assert all(i.mask_path and Path(i.mask_path).is_file() for i in items)
    by_name = {Path(i.path).name: i for i in items}
    assert by_name[names[0]].identity == "chq:17" and by_name[names[1]].identity == "chq:42"
    assert sum(i.identity is not None for i in items) == 2


def test_several_sources_and_clear_errors(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("path,identity\na.jpg,p\nsub/b.jpg,lfw:q\n,ignored\n")
    sources = [
        SourceConfig(name="csv", kind="identity_csv", path=str(csv)),
        SourceConfig(name="dir", kind="folder", path=str(tmp_path)),
    ]
    items = read_sources(sources, _paths(tmp_path))
    assert [(i.source, i.identity) for i in items[:2]] == [("csv", "csv:p"), ("csv", "lfw:q")]
    assert {i.source for i in items} == {"csv", "dir"}
    with pytest.raises(ConfigError, match="not found"):
        read_sources([SourceConfig(name="x", kind="vggface2", path="nope")], _paths(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,identity\na.jpg,p\n")
    with pytest.raises(ConfigError, match="'path' column"):
        read_sources([SourceConfig(name="x", kind="identity_csv", path=str(bad))], _paths(tmp_path))
    with pytest.raises(ValueError, match="celebahq"):
        SourceConfig(name="x", kind="folder", path="p", masks="m")


def test_paths_stored_relative_to_data_root(tmp_path):
    for rel in ["data/vgg/n001/a.jpg", "data/vgg/n002/b c.jpg", "elsewhere/c.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    root = tmp_path / "data"
    paths = _paths(root)
    items = read_sources([SourceConfig(name="v", kind="vggface2", path="vgg")], paths)
    assert [i.path for i in items] == ["vgg/n001/a.jpg", "vgg/n002/b c.jpg"]
    assert all(paths.data_path(i.path).is_file() for i in items)
    # a source outside data_root keeps absolute paths
    outside = SourceConfig(name="o", kind="folder", path=str(tmp_path / "elsewhere"))
    assert [i.path for i in read_sources([outside], paths)] == [str(tmp_path / "elsewhere/c.jpg")]
    assert data_relative(root / ".." / "x.jpg", root) == str(root / ".." / "x.jpg")
    assert data_relative(root / "a" / "x.jpg", root) == "a/x.jpg"
