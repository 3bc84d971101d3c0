"""A disk that fills up while a shard is written: no partial tar under any name, an error
naming the shard and the cause, and a rerun that completes the shard."""

from __future__ import annotations

import errno
import tarfile
from dataclasses import dataclass

import pyarrow as pa
import pytest
import webdataset as wds

from preprocessing.config import PrepareConfig
from preprocessing.shard_pass import ShardWriteError, WriteShards, read_sidecar, write_plans


@dataclass
class _Face:
    key: str

    def encode(self, quality: int) -> dict:
        return {"__key__": self.key, "jpg": self.key.encode() * 200, "json": b"{}"}


class _Annotator:
    """Stands in for the pass-2 models: one small sample per row."""

    mask_backend_name = None

    def prepare_one(self, row: dict) -> _Face:
        return _Face(row["key"])

    def finish(self, batch: list) -> None:
        pass


def _plan(tmp_path, shard: str, rows: list[dict], fingerprint: str) -> dict:
    """A one-plan plans file and the task spec that points at it."""
    path = tmp_path / "plans.parquet"
    write_plans(pa.Table.from_pylist(rows), [len(rows)], path)
    return {"shard": shard, "plan": 0, "plans": str(path), "fingerprint": fingerprint}


def _writer(tmp_path) -> WriteShards:
    w = WriteShards.__new__(WriteShards)  # no models: the annotator is replaced
    cfg = PrepareConfig.model_validate({"sources": [{"name": "s", "kind": "folder", "path": "x"}]})
    w.cfg, w.shard_dir, w.annotator = cfg, tmp_path / "shards", _Annotator()
    return w


def test_disk_full_leaves_no_partial_shard_and_a_rerun_completes_it(tmp_path, monkeypatch):
    rows = [{"key": f"face{i:03d}"} for i in range(20)]
    plan = _plan(tmp_path, "train-000003", rows, "f1")
    original, calls = wds.TarWriter.write, {"n": 0}

    def full_after_12(self, sample):
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, sample)

    monkeypatch.setattr(wds.TarWriter, "write", full_after_12)
    writer = _writer(tmp_path)
    with pytest.raises(ShardWriteError, match=r"train-000003\.tar .*No space left on device"):
        writer.write(plan)
    assert sorted(p.name for p in writer.shard_dir.iterdir()) == []  # nothing half-written
    assert read_sidecar(writer.shard_dir, "train-000003", "f1") is None

    monkeypatch.setattr(wds.TarWriter, "write", original)  # space freed: rerun
    outcomes = writer.write(plan)
    assert [o["key"] for o in outcomes] == [r["key"] for r in rows]
    assert all(o["ok"] for o in outcomes)
    with tarfile.open(writer.shard_dir / "train-000003.tar") as tar:
        assert len({m.name.split(".")[0] for m in tar.getmembers()}) == 20
    assert read_sidecar(writer.shard_dir, "train-000003", "f1") == outcomes


def test_a_model_failure_in_a_batch_fails_only_its_face(tmp_path):
    class FailsOnFace7(_Annotator):
        def finish(self, batch: list) -> None:
            if any(f.key == "face007" for f in batch):
                raise RuntimeError("simulated parser failure")

    rows = [{"key": f"face{i:03d}"} for i in range(10)]
    plan = _plan(tmp_path, "train-000000", rows, "f")
    writer = _writer(tmp_path)
    writer.annotator = FailsOnFace7()
    outcomes = writer.write(plan)
    failed = [o["key"] for o in outcomes if not o["ok"]]
    assert failed == ["face007"]
    assert "simulated parser failure" in next(o["detail"] for o in outcomes if not o["ok"])
    with tarfile.open(writer.shard_dir / "train-000000.tar") as tar:
        keys = {n.split(".")[0] for n in tar.getnames()}
    assert keys == {f"face{i:03d}" for i in range(10)} - {"face007"}
