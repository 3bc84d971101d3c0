"""The driver's hand-over files: ``detections/inputs.parquet`` (one row group per detection
chunk) and ``shards/plans.parquet`` (one row group per shard plan), so tasks get numbers,
not rows, and a rerun plans only what is missing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from infra.models import ModelStore
from preprocessing.config import PrepareConfig
from preprocessing.detect_pass import read_inputs, write_chunk
from preprocessing.prepare import plan_detection, plan_fingerprints, plan_table, read_detections
from preprocessing.records import DETECTION_SCHEMA, InputItem, Reason
from preprocessing.shard_pass import read_plan, write_plans

SOURCES = [{"name": "s", "kind": "folder", "path": "x"}]


def _items(n: int) -> list[InputItem]:
    items = [InputItem(f"{i:016x}"[::-1], "s", f"a/{i}.jpg", f"{i}.jpg", "s:a") for i in range(n)]
    items.append(InputItem("f" * 16, "s", "a/.h.jpg", ".h.jpg", "s:a", None, Reason.HIDDEN_FILE))
    return items


def test_detection_chunks_are_row_groups_and_a_rerun_plans_only_missing_chunks(
    tmp_path, models_dir
):
    cfg = PrepareConfig.model_validate({"sources": SOURCES, "ray": {"chunk_size": 4}})
    store, items = ModelStore(models_dir), _items(10)
    specs, files = plan_detection(items, cfg, store, tmp_path)
    assert [s["chunk"] for s in specs] == [0, 1, 2] and len(files) == 3
    keys = sorted(i.key for i in items if i.reason is None)
    chunks = [[r["key"] for r in read_inputs(tmp_path / "inputs.parquet", c)] for c in range(3)]
    assert chunks == [keys[0:4], keys[4:8], keys[8:10]]  # the hidden file is not detected

    done = specs[1]
    rows = [{**r, "width": 1, "height": 1} for r in read_inputs(tmp_path / "inputs.parquet", 1)]
    write_chunk(pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA), files[1], done["fingerprint"])
    again, _ = plan_detection(items, cfg, store, tmp_path)
    assert [s["chunk"] for s in again] == [0, 2]
    for s in again:  # stand in for the actors of chunks 0 and 2
        rows = read_inputs(tmp_path / "inputs.parquet", s["chunk"])
        write_chunk(pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA), files[s["chunk"]], "x")
    table = read_detections(files, items)
    assert sorted(table["key"]) == sorted(i.key for i in items)  # every input, once
    assert table.set_index("key").loc["f" * 16, "reason"] == Reason.HIDDEN_FILE


def test_plan_rows_round_trip_and_fingerprints_follow_the_rows(tmp_path):
    n = 7
    decisions = pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(n)],
            "source": "s",
            "listed": [f"{i}.jpg" for i in range(n)],
            "path": [f"a/{i}.jpg" for i in range(n)],
            "identity": ["s:a", None, "s:b", "s:b", "s:c", "s:c", "s:c"],
            "mask_path": None,
            "split": "train",
            "width": np.arange(n, dtype=np.int32) + 100,
            "height": 120,
            "det_score": np.float32(0.9),
            "bbox": [np.arange(4, dtype=np.float32) + i for i in range(n)],
            "landmarks": [np.full(10, 0.1 * i, np.float32) for i in range(n)],
            "yaw": np.float32(1.5),
            "pitch": np.float32(-2.0),
            "roll": np.float32(0.25),
            "eye_roll": np.float32(0.5),
        }
    )
    plans = [{"shard": "train-000000", "keys": ["k3", "k0", "k1"]}, {"shard": "x", "keys": ["k6"]}]
    table = plan_table(decisions, plans)
    write_plans(table, [3, 1], tmp_path / "plans.parquet")
    first = read_plan(tmp_path / "plans.parquet", 0)
    assert [r["key"] for r in first] == ["k3", "k0", "k1"]
    assert first[2]["identity"] is None and first[0]["bbox"] == [3.0, 4.0, 5.0, 6.0]
    assert json.loads(json.dumps(first)) == first  # the rows are what the fingerprint hashes
    prints = list(plan_fingerprints(table, plans, {"s": 1}))
    decisions.loc[6, "yaw"] = np.float32(3.0)
    changed = list(plan_fingerprints(plan_table(decisions, plans), plans, {"s": 1}))
    assert prints[0] == changed[0] and prints[1] != changed[1]
