import shutil

import pytest
import torch

from infra.models import (
    REGISTRY,
    STAND_INS_FILE,
    ModelChecksumError,
    ModelFileMissingError,
    ModelStore,
    UnknownModelError,
)
from infra.stand_ins import overlay_models_dir, write_stand_in


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


def test_a_listed_stand_in_is_accepted_and_an_altered_one_refused(tmp_path, caplog):
    path = write_stand_in(tmp_path, "vgg19_imagenet")
    store = ModelStore(tmp_path)
    assert store.is_stand_in("vgg19_imagenet") and not store.is_stand_in("scrfd_500m")
    with caplog.at_level("WARNING"):
        assert store.path("vgg19_imagenet") == path.resolve()
    assert "randomly initialised stand-in" in caplog.text
    state = torch.load(path, weights_only=True)
    assert state["features.21.weight"].shape == (512, 512, 3, 3) and len(state) == 20
    torch.save({k: v + 1 for k, v in state.items()}, path)  # changed after it was listed
    with pytest.raises(ModelChecksumError, match="stand-in"):
        ModelStore(tmp_path).path("vgg19_imagenet")
    # without the listing the registry's own checksum rule applies (torch hub prefix)
    (tmp_path / STAND_INS_FILE).unlink()
    with pytest.raises(ModelChecksumError, match="dcbb9e9d"):
        ModelStore(tmp_path).path("vgg19_imagenet")


def test_overlay_links_the_real_models_and_adds_stand_ins(tmp_path, models_dir):
    overlay = overlay_models_dir(models_dir, tmp_path / "m", ["vgg19_imagenet"])
    store = ModelStore(overlay)
    assert store.path("scrfd_500m") == (models_dir / REGISTRY["scrfd_500m"].file).resolve()
    assert store.path("vgg19_imagenet").is_relative_to(overlay.resolve())
    assert not (models_dir / REGISTRY["vgg19_imagenet"].file).exists()  # shared/ untouched
    first = (overlay / STAND_INS_FILE).read_text()
    overlay_models_dir(models_dir, overlay, ["vgg19_imagenet"])  # again: kept, not rewritten
    assert (overlay / STAND_INS_FILE).read_text() == first
    again = overlay_models_dir(overlay, tmp_path / "m2", ["vgg19_imagenet"])  # inherited
    assert ModelStore(again).is_stand_in("vgg19_imagenet")
    real = tmp_path / "real"
    (real / "vgg").mkdir(parents=True)
    torch.save({}, real / REGISTRY["vgg19_imagenet"].file)  # a user's own download
    with pytest.raises(ValueError, match="holds the real"):
        overlay_models_dir(real, tmp_path / "m3", ["vgg19_imagenet"])
