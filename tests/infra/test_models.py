import shutil

import pytest

from infra.models import (
    REGISTRY,
    ModelChecksumError,
    ModelFileMissingError,
    ModelStore,
    UnknownModelError,
)


def test_every_shared_model_verifies(models_dir):
    store = ModelStore(models_dir)
    present = [n for n, s in REGISTRY.items() if (models_dir / s.file).exists()]
    assert len(present) == 9  # every file in ../shared/models is registered
    for name in present:
        assert store.path(name).is_file()


def test_missing_file_names_file_checksum_and_url(tmp_path):
    store = ModelStore(tmp_path)
    spec = REGISTRY["arcface_w600k_r50"]
    with pytest.raises(ModelFileMissingError) as err:
        store.path("arcface_w600k_r50")
    msg = str(err.value)
    assert str(tmp_path / spec.file) in msg
    assert spec.sha256 in msg
    assert "buffalo_l.zip" in msg and "w600k_r50.onnx" in msg
    assert not store.available("arcface_w600k_r50")


def test_altered_file_is_refused(tmp_path, models_dir):
    spec = REGISTRY["scrfd_2.5g_bnkps"]
    target = tmp_path / spec.file
    target.parent.mkdir(parents=True)
    shutil.copy(models_dir / spec.file, target)
    with target.open("r+b") as f:  # flip one byte
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelChecksumError) as err:
        ModelStore(tmp_path).path("scrfd_2.5g_bnkps")
    assert spec.sha256 in str(err.value) and spec.url in str(err.value)


def test_unknown_name_lists_registry(tmp_path):
    with pytest.raises(UnknownModelError, match="mobilefacenet_128d"):
        ModelStore(tmp_path).path("no_such_model")
