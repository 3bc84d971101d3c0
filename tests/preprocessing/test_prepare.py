"""The prepare job on real files from three sources: every input accounted for."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from infra.dataset_format import DatasetCard

# every test here reads the session's whole prepare run (the `prepared` fixture)
pytestmark = pytest.mark.integration


def _manifest(out_dir):
    return pd.read_parquet(out_dir / "manifest.parquet")


def _s(value):
    """A string cell, or None for a missing one (pandas gives NaN)."""
    return value if isinstance(value, str) else None


def test_manifest_has_one_row_per_input(prepared):
    _, card, expected, out_dir, _ = prepared
    m = _manifest(out_dir)
    assert len(m) == expected["rows"] == card.num_inputs
    assert m["key"].is_unique
    assert set(m["status"]) == {"kept", "rejected"}
    assert m.loc[m.status == "rejected", "reason"].notna().all()
    assert m.loc[m.status == "kept", "reason"].isna().all()
    assert (m.status == "kept").sum() == card.num_samples
    assert set(m["source"]) == {"subset", "bad", "vgg"}
    funnel = {s["step"]: s for s in card.funnel}
    assert funnel["input"]["remaining"] == len(m)
    assert card.funnel[-1]["remaining"] == card.num_samples
    assert sum(s["rejected"] for s in card.funnel) == len(m) - card.num_samples


def test_group_and_empty_photos_rejected_with_reason(prepared):
    _, _, expected, out_dir, _ = prepared
    m = _manifest(out_dir)
    multi = m[m["path"].str.startswith("multi_face/")]  # relative to data_root
    none = m[m["path"].str.startswith("no_face/")]
    assert len(multi) == expected["multi"] and (multi.reason == "multiple_faces").all()
    assert (multi.num_faces > 1).all()
    assert len(none) == expected["none"] and (none.reason == "no_face").all()
    corrupt = m[m["path"].str.endswith("corrupt.jpg")]
    assert corrupt.reason.tolist() == ["corrupt_image"]
    assert (m.reason == "listed_twice").sum() == 1


def test_bad_files_and_vggface2_duplicates(prepared):
    _, _, expected, out_dir, _ = prepared
    m = _manifest(out_dir).set_index(["source", "listed"])
    for source in ("bad", "vgg"):
        for listed, reason in expected[source].items():
            row = m.loc[(source, listed)]
            assert _s(row.reason) == reason, (source, listed, row.reason, row.detail)
            assert row.status == ("kept" if reason is None else "rejected")
    copy = m.loc[("vgg", "idA/003_copy.jpg")]
    original_key = m.loc[("vgg", "idA/003.jpg"), "key"]
    assert copy.near_duplicate_of == original_key
    # the EXIF-rotated photo was decoded upright: its eyes are level
    assert abs(m.loc[("bad", "exif_rotated.jpg"), "eye_roll"]) < 15


def test_shards_hold_aligned_faces_and_annotations(prepared):
    _, card, _, out_dir, _ = prepared
    card = DatasetCard.load(out_dir)
    assert set(card.splits) == {"train", "eval"}
    assert len(card.splits["eval"].identities) == 3
    assert not set(card.splits["eval"].identities) & set(card.splits["train"].identities)
    assert card.embedding.dim == 128 and card.crop.size == 128
    assert card.annotations["mask_backend"] == "unet"
    assert sum(s.num_samples for s in card.shard_index.values()) == card.num_samples
    m = pd.read_parquet(out_dir / "manifest.parquet").set_index("key")
    n = 0
    for sample in wds.WebDataset(card.shard_paths(out_dir, "train"), shardshuffle=False).decode(
        "rgb8"
    ):
        n += 1
        assert sample["jpg"].shape == (128, 128, 3)
        emb = sample["id.npy"]
        assert emb.shape == (128,) and abs(np.linalg.norm(emb) - 1) < 1e-4
        assert sample["lmk468.npy"].shape == (468, 3)
        meta = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
        row = m.loc[sample["__key__"]]
        assert row.status == "kept" and row.split == "train"
        assert meta["identity"] == _s(row.identity)
        assert set(meta["pose"]) == {"yaw", "pitch", "roll", "eye_roll"}
        # aligned eye landmarks sit on the scaled ArcFace template
        lm = np.array(meta["landmarks_aligned"])
        assert np.abs(lm[:2, 1] - 51.6 * 128 / 112).max() < 12
        # FaceMesh eye corners sit near the 5-point eye centres in the crop
        mesh = sample["lmk468.npy"]
        eye = (mesh[33, :2] + mesh[133, :2]) / 2
        assert np.linalg.norm(eye - lm[0]) < 12
    assert n == card.splits["train"].num_samples


def test_outputs_hold_no_path_of_the_machine(prepared):
    paths, _, _, out_dir, _ = prepared
    m = _manifest(out_dir)
    subset = m[m["source"] == "subset"]
    under_root = subset[~subset["listed"].str.endswith("corrupt.jpg")]
    # files under data_root are stored relative to it and resolve back to the same file
    assert len(under_root) and not under_root["path"].str.startswith("/").any()
    for rel, listed in zip(under_root["path"], under_root["listed"], strict=True):
        assert paths.data_path(rel) == paths.data_root / rel
        assert str(paths.data_path(rel)) == listed  # the CSV lists absolute paths
    # sources outside data_root (the test's temporary folders) keep absolute paths
    assert m.loc[m["source"] == "vgg", "path"].str.startswith("/").all()
    root = str(paths.data_root)
    for chunk in sorted((out_dir / "detections").glob("*.parquet")):
        table = pq.read_table(chunk).to_pandas()
        assert not table["path"].str.startswith(root).any(), chunk
        assert not table["mask_path"].dropna().str.startswith(root).any(), chunk
    for f in [out_dir / "dataset.json", *out_dir.glob("funnel.*"), *out_dir.glob("shards/*.json")]:
        if f.suffix != ".png":
            assert root not in f.read_text(), f
