import pandas as pd

from infra.config import build
from preprocessing.config import PrepareConfig, SplitConfig
from preprocessing.filters import assign_split, decide, plan_shards

CFG = build(
    PrepareConfig, {"sources": [{"name": "s", "kind": "identity_csv", "path": "x.csv"}]}, "prepare"
)


def _table():
    return pd.DataFrame(
        {
            "key": ["a", "b", "c", "d", "e", "f"],
            "identity": ["p", "p", "q", "q", "r", None],
            "reason": [None, None, None, "corrupt_image", None, None],
            "detail": ["", "", "", "bad", "", ""],
            "num_faces": [1, 0, 3, 0, 1, 1],
        }
    )


def test_filters_apply_in_order_and_count():
    decisions, funnel = decide(_table(), CFG)
    reasons = decisions.set_index("key")["reason"]
    assert {k: v if isinstance(v, str) else None for k, v in reasons.items()} == {
        "a": None,
        "b": "no_face",
        "c": "multiple_faces",
        "d": "corrupt_image",
        "e": None,
        "f": None,
    }
    assert list(decisions["status"]) == ["kept", "rejected", "rejected", "rejected", "kept", "kept"]
    assert [(s["step"], s["rejected"], s["remaining"]) for s in funnel] == [
        ("input", 0, 6),
        ("readable", 1, 5),
        ("face_found", 1, 4),
        ("single_face", 1, 3),
    ]


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
