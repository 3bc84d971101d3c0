"""The one check every loader of a published checkpoint runs: does a state dict have the
key names and tensor shapes of the network's layout?"""

from __future__ import annotations

import torch


def layout_problems(
    state: dict, ref: dict[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong) of ``state`` against the layout ``ref`` (key → shape):
    keys of ``ref`` absent from ``state``; keys of ``state`` not in ``ref``; and, for shared
    keys, ``"<key> <shape or type> (expected <shape>)"`` where the value is not a tensor of
    the expected shape."""
    missing = [k for k in ref if k not in state]
    unexpected = [k for k in state if k not in ref]
    wrong = [
        f"{k} {tuple(v.shape) if torch.is_tensor(v) else type(v).__name__} (expected {ref[k]})"
        for k, v in state.items()
        if k in ref and (not torch.is_tensor(v) or tuple(v.shape) != tuple(ref[k]))
    ]
    return missing, unexpected, wrong
