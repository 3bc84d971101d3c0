import pandas as pd
import pytest

from infra.config import build
from preprocessing.config import PrepareConfig, SplitConfig
from preprocessing.filters import (
    assign_split,
    decide,
    duplicate_entry_groups,
    near_duplicates,
    plan_shards,
)
from preprocessing.records import DETECTION_SCHEMA

SOURCES = [{"name": "s", "kind": "identity_csv", "path": "x.csv"}]
# 64-bit pHashes as 16 hex digits: B differs from A in 2 bits, C in 16 bits
A, B, C = "f0f0f0f0f0f0f0f0", "f0f0f0f0f0f0f0f3", "0f0ff0f0f0f0f0f0"


def _row(key, **kw):
    row = {name: None for name in DETECTION_SCHEMA.names}
    row.update(
        key=key,
        source="s",
        listed=f"id/{key}.jpg",
        identity="s:p",
        detail="",
        width=400,
        height=600,
        phash=A,
        num_faces=1,
        face_size=200.0,
        yaw=0.0,
        pitch=0.0,
        eye_roll=0.0,
    )
    row.update(kw)
    return row


def _cfg(**filters):
    return build(PrepareConfig, {"sources": SOURCES, "filters": filters}, "prepare")


def test_every_filter_in_order_with_reason_and_count():
    rows = [
        _row("k00", reason="listed_twice", detail="twice"),
        _row("k01", listed="id/001_01.jpg", phash=C),
        _row("k02", listed="id/001_02.jpg", phash=C),  # both _01 and _02 → both dropped
        _row("k03", listed="id/002_01.jpg", phash="0000ffff0000ffff"),  # lone _01 kept
        _row("k04", reason="corrupt_image", detail="truncated", width=0, height=0),
        _row("k05", phash=A, width=500),  # kept (largest of the pHash pair)
        _row("k06", phash=B),  # near-duplicate of k05
        _row("k07", num_faces=0, phash="123456789abcdef0"),
        _row("k08", num_faces=3, phash="fedcba9876543210"),
        _row("k09", face_size=120.0, phash="00ff00ff00ff00ff"),  # below min_face 150
        _row("k10", width=300, height=400, phash="ff00ff00ff00ff00"),  # aspect 1.33 kept
        _row("k11", width=400, height=380, phash="0f0f0f0f0f0f0f0f"),  # aspect 0.95 rejected
        _row("k12", eye_roll=-40.0, phash="aaaaaaaaaaaaaaaa"),
        _row("k13", yaw=60.0, phash="5555555555555555"),
    ]
    cfg = _cfg(
        size={"drop_fraction": 0.0, "min_face": 150},
        aspect={"keep": "outside"},
        tilt={"max_roll": 30, "max_yaw": 45, "max_pitch": 30},
    )
    df, funnel, thresholds = decide(pd.DataFrame(rows), cfg)
    reasons = {k: r if isinstance(r, str) else None for k, r in zip(df.key, df.reason, strict=True)}
    assert reasons == {
        "k00": "listed_twice",
        "k01": "duplicate_entry",
        "k02": "duplicate_entry",
        "k03": None,
        "k04": "corrupt_image",
        "k05": None,
        "k06": "near_duplicate",
        "k07": "no_face",
        "k08": "multiple_faces",
        "k09": "small_face",
        "k10": None,
        "k11": "aspect_ratio",
        "k12": "tilted",
        "k13": "tilted",
    }
    assert df.set_index("key").loc["k06", "near_duplicate_of"] == "k05"
    assert "distance 2" in df.set_index("key").loc["k06", "detail"]
    assert [(s["step"], s["rejected"]) for s in funnel] == [
        ("input", 0),
        ("listed", 1),
        ("duplicate_entries", 2),
        ("readable", 1),
        ("near_duplicates", 1),
        ("single_face", 2),
        ("size", 1),
        ("aspect", 1),
        ("tilt", 2),
    ]
    assert funnel[-1]["remaining"] == 3 == (df.status == "kept").sum()
    assert thresholds["face_size_limit"] == 150


def test_size_quantile_is_over_the_remaining_faces():
    hashes = [A, C, "0000ffff0000ffff", "00ff00ff00ff00ff", "aaaaaaaaaaaaaaaa"]
    sizes = [50, 60, 70, 80, 90]
    rows = [
        _row(f"k{i}", face_size=float(s), phash=h)
        for i, (s, h) in enumerate(zip(sizes, hashes, strict=True))
    ]
    df, _, th = decide(
        pd.DataFrame(rows),
        _cfg(size={"drop_fraction": 0.45, "min_face": 0}, aspect={"keep": "all"}),
    )
    assert th["face_size_quantile"] == pytest.approx(68.0)  # pandas linear quantile
    assert df.sort_values("key").status.tolist() == ["rejected", "rejected", "kept", "kept", "kept"]


def test_duplicate_entry_groups():
    listed = pd.Series(
        ["n1/001_01.jpg", "n1/001_02.jpg", "n1/002_01.jpg", "n2/001_01.jpg", "x.jpg"]
    )
    assert duplicate_entry_groups(listed, r"^(?P<stem>.+)_(?P<index>\d{2})$").tolist() == [
        2,
        2,
        1,
        1,
        1,
    ]


def test_duplicate_entry_groups_count_files_not_listings_and_stay_within_a_source():
    listed = pd.Series(["n1/7_01.jpg", "n1/7_01.jpg", "n1/8_01.jpg", "n1/8_02.png", "n1/8_02.png"])
    source = pd.Series(["a", "a", "a", "a", "b"])
    pattern = r"^(?P<stem>.+)_(?P<index>\d{2})$"
    # a file listed twice is not a group with itself; 8_02 in source b is another photo
    assert duplicate_entry_groups(listed, pattern, source).tolist() == [1, 1, 2, 2, 1]
    assert duplicate_entry_groups(listed, pattern).tolist() == [1, 1, 2, 2, 2]


def test_near_duplicates_keep_largest_and_stay_within_identity():
    df = pd.DataFrame(
        [
            _row("a", phash=A, width=100),
            _row("b", phash=B, width=900),
            _row("c", phash=A, identity="s:other"),
        ]
    )
    of, dist = near_duplicates(df, max_distance=4)
    assert [x if isinstance(x, str) else None for x in of] == ["b", None, None]
    assert dist.iloc[0] == 2 and dist.iloc[1:].isna().all()


def test_split_holds_out_whole_identities_deterministically():
    df = pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(12)],
            "identity": ["a", "a", "b", "b", "c", "c", "d", "d", "e", None, "f", "f"],
            "status": ["kept"] * 11 + ["rejected"],
        }
    )
    cfg = SplitConfig(eval_identities=2, min_images=2, seed=3)
    split = assign_split(df, cfg)
    held = set(df.loc[split == "eval", "identity"])
    assert len(held) == 2 and held <= {"a", "b", "c", "d"}  # e has 1 image, f is rejected
    for ident in held:  # all of an identity's faces go to one side
        assert set(split[df.identity == ident]) == {"eval"}
    assert pd.isna(split.iloc[11])
    assert assign_split(df, cfg).equals(split)


def test_shards_group_identities_and_are_stable():
    kept = pd.DataFrame(
        {
            "key": ["z", "y", "x", "w", "v"],
            "identity": ["b", "a", "b", "a", None],
            "split": ["train", "train", "train", "train", "eval"],
        }
    )
    plans = plan_shards(kept, 2)
    assert [(p["shard"], p["keys"]) for p in plans] == [
        ("eval-000000", ["v"]),
        ("train-000000", ["w", "y"]),
        ("train-000001", ["x", "z"]),
    ]
    assert plan_shards(kept.sample(frac=1, random_state=1), 2) == plans
