"""The prepare job on real files: every input accounted for, bad ones rejected with reasons."""

import json

import numpy as np
import pandas as pd
import webdataset as wds

from preprocessing.dataset_card import DatasetCard


def test_manifest_has_one_row_per_input(prepared):
    _, card, expected, out_dir, _ = prepared
    m = pd.read_parquet(out_dir / "manifest.parquet")
    assert len(m) == expected["rows"] == card.num_inputs
    assert m["key"].is_unique
    assert set(m["status"]) == {"kept", "rejected"}
    assert m.loc[m.status == "rejected", "reason"].notna().all()
    assert m.loc[m.status == "kept", "reason"].isna().all()
    assert (m.status == "kept").sum() == card.num_samples


def test_group_and_empty_photos_rejected_with_reason(prepared):
    _, _, expected, out_dir, _ = prepared
    m = pd.read_parquet(out_dir / "manifest.parquet")
    multi = m[m["path"].str.contains("/multi_face/")]
    none = m[m["path"].str.contains("/no_face/")]
    assert len(multi) == expected["multi"] and (multi.reason == "multiple_faces").all()
    assert (multi.num_faces > 1).all()
    assert len(none) == expected["none"] and (none.reason == "no_face").all()
    corrupt = m[m["path"].str.endswith("corrupt.jpg")]
    assert corrupt.reason.tolist() == ["corrupt_image"]
    assert (m.reason == "listed_twice").sum() == 1


def test_shards_hold_aligned_faces_and_embeddings(prepared):
    _, card, _, out_dir, _ = prepared
    card = DatasetCard.load(out_dir)
    assert set(card.splits) == {"train", "eval"}
    assert len(card.splits["eval"].identities) == 3
    assert not set(card.splits["eval"].identities) & set(card.splits["train"].identities)
    assert card.embedding.dim == 128 and card.crop.size == 256
    m = pd.read_parquet(out_dir / "manifest.parquet").set_index("key")
    n = 0
    for sample in wds.WebDataset(card.shard_paths(out_dir, "train"), shardshuffle=False).decode(
        "rgb8"
    ):
        n += 1
        assert sample["jpg"].shape == (256, 256, 3)
        emb = sample["id.npy"]
        assert emb.shape == (128,) and abs(np.linalg.norm(emb) - 1) < 1e-4
        meta = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
        row = m.loc[sample["__key__"]]
        assert row.status == "kept" and row.split == "train" and meta["identity"] == row.identity
        # aligned landmarks sit near the scaled ArcFace template
        lm = np.array(meta["landmarks_aligned"])
        assert np.abs(lm[:2, 1] - 51.6 * 256 / 112).max() < 25
    assert n == card.splits["train"].num_samples
