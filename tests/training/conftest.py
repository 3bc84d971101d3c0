"""Fixtures of the training tests: tiny WebDataset shards written on the fly."""

import io
import json

import cv2
import numpy as np
import pytest
import webdataset as wds


def _sample(i: int, identity: str, good: bool = True) -> dict:
    img = np.full((8, 8, 3), i * 9 % 255, np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes() if good else b"not a jpeg"
    buf = io.BytesIO()
    np.save(buf, np.eye(4, dtype=np.float32)[i % 4])
    return {
        "__key__": f"k{i:04d}",
        "jpg": jpg,
        "id.npy": buf.getvalue(),
        "json": json.dumps({"identity": identity}).encode(),
    }


@pytest.fixture
def make_sample():
    """``make_sample(i, identity, good=True)``: a raw sample with an 8-px crop of gray level
    i·9 mod 255, the one-hot embedding e_(i mod 4) and ``identity``; ``good=False`` gives an
    undecodable jpg."""
    return _sample


@pytest.fixture
def write_shard():
    """``write_shard(path, samples) -> str``: a WebDataset tar of ``samples`` at ``path``."""

    def write(path, samples) -> str:
        with wds.TarWriter(str(path)) as w:
            for s in samples:
                w.write(s)
        return str(path)

    return write
