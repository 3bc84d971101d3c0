"""One-time conversion of a released checkpoint that is a pickled module into a plain state
dict (``fsp convert-released <name>``).

SimSwap publishes its ArcFace as ``torch.save`` of the module object itself
(``arcface_model/arcface_checkpoint.tar``: older copies a dict whose ``"model"`` is an
``nn.DataParallel`` of ``models.arcface_models.ResNet``, newer ones the ``ResNet`` itself;
SimSwap's ``models/fs_model.py`` loads it with a plain ``torch.load`` and so imports and
runs the classes the file names). Here the file is read once by
:class:`RestrictedUnpickler`, which never imports a class the file names:

* PyTorch's tensor and storage rebuilders, ``collections.OrderedDict``, ``set`` /
  ``frozenset`` and ``torch.nn.Parameter`` / ``torch.Tensor`` are the real ones (the data);
* every other global — the reference repository's classes, ``torch.nn`` module classes,
  optimizers, numpy scalars, any function — becomes an inert placeholder class that only
  records what pickle hands it (``__setstate__`` keeps the state dict; calling it keeps the
  arguments). No code of the file runs: a reduce call to ``os.system`` yields a placeholder.

The module's tensors are then collected from the placeholders' ``_parameters``,
``_buffers`` and ``_modules`` (as ``nn.Module.state_dict`` names them, ``DataParallel``'s
``module.`` level removed) and written with ``torch.save`` as ``{name: tensor}``, which run
time reads with ``weights_only=True`` (:func:`training.released.base.load_plain_state_dict`).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from infra.models import ModelStore, file_sha256
from training.released.base import ReleasedWeightsError, load_plain_state_dict

#: Converted registry model → registry model of the published pickled file it is made from.
CONVERSIONS: dict[str, str] = {"simswap_arcface": "simswap_arcface_release"}

#: Globals resolved to the real object: tensor data and plain containers only.
_REAL: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Tensor"): torch.Tensor,
    ("torch._tensor", "Tensor"): torch.Tensor,
}


class Inert:
    """Placeholder for a global the file names: records, never runs.

    ``Inert(*args)`` (a pickle REDUCE) keeps ``args``; ``__setstate__`` keeps the state
    (for a pickled ``nn.Module``: its ``__dict__`` with ``_parameters``, ``_buffers`` and
    ``_modules``); item and append calls of container subclasses are kept too. ``qualname``
    is the global it stands for.
    """

    qualname = "?"
    dump_patches = False  # read by torch's legacy loader when a module's source changed

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", []).append((key, value))

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("items", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("items", []).extend(values)

    @property
    def attrs(self) -> dict:
        """The recorded state when it is a dict (slots state ignored), else {}."""
        state = self.__dict__.get("state")
        state = state[0] if isinstance(state, tuple) and state else state
        return state if isinstance(state, dict) else {}


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Inert:
    """Stand-in for ``copyreg._reconstructor`` (protocol 0/1 objects): an empty placeholder,
    never ``base.__new__``/``base.__init__``."""
    return cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, Inert) else Inert()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns the real object only for
    :data:`_REAL` and an :class:`Inert` subclass named after the global for everything else;
    it imports nothing."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 files name Python 2 modules (``__builtin__``, ``copy_reg``).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _REAL:
            return _REAL[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        return _placeholder(module, name)


@cache
def _placeholder(module: str, name: str) -> type:
    """One :class:`Inert` subclass per global (so equal globals give one class)."""
    return type(name.rpartition(".")[2] or "Inert", (Inert,), {"qualname": f"{module}.{name}"})


def _restricted_pickle_module() -> types.ModuleType:
    """A stand-in ``pickle`` module for ``torch.load(pickle_module=…)``: its ``Unpickler``
    is :class:`RestrictedUnpickler` (torch subclasses it for storages) and ``load`` reads the
    legacy format's header records with it."""
    mod = types.ModuleType("fsp_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
    return mod


def restricted_load(path: Path) -> Any:
    """Read a ``torch.save`` file (zip or legacy format) with :class:`RestrictedUnpickler`:
    tensors are real, every other object an :class:`Inert` placeholder."""
    with warnings.catch_warnings():  # the legacy loader warns that placeholder sources differ
        warnings.simplefilter("ignore")
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module()
        )


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Inert) and "_parameters" in obj.attrs and "_modules" in obj.attrs


def find_module(obj: Any) -> Inert:
    """The pickled network inside a loaded object: the object itself, or the ``"model"`` /
    ``"state_dict"`` / ``"net"`` entry of a dict; a ``DataParallel`` wrapper is unwrapped.

    Raises
    ------
    ReleasedWeightsError : no pickled module found (the message lists what the file holds).
    """
    if isinstance(obj, dict):
        found = [obj[k] for k in ("model", "net", "state_dict") if _is_module(obj.get(k))]
        if not found:
            raise ReleasedWeightsError(f"no pickled module in a dict with keys {sorted(obj)}")
        obj = found[0]
    if not _is_module(obj):
        raise ReleasedWeightsError(f"not a pickled module: {getattr(obj, 'qualname', type(obj))}")
    children = obj.attrs["_modules"]
    if obj.qualname.endswith("DataParallel") and _is_module(children.get("module")):
        obj = children["module"]
    return obj


def collect_state_dict(module: Inert, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{dotted name: tensor}`` of a pickled module's parameters and persistent buffers, in
    ``nn.Module.state_dict`` order and naming (``None`` entries skipped)."""
    attrs = module.attrs
    skip = attrs.get("_non_persistent_buffers_set", set())
    out = {}
    for group in ("_parameters", "_buffers"):
        for name, t in attrs.get(group, {}).items():
            if isinstance(t, torch.Tensor) and not (group == "_buffers" and name in skip):
                out[prefix + name] = t.detach().clone().contiguous()
    for name, child in attrs.get("_modules", {}).items():
        if _is_module(child):
            out |= collect_state_dict(child, f"{prefix}{name}.")
    return out


def read_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of the pickled module in ``path`` (:func:`restricted_load`,
    :func:`find_module`, :func:`collect_state_dict`). ReleasedWeightsError when the file
    holds no module, or a module without tensors."""
    state = collect_state_dict(find_module(restricted_load(path)))
    if not state:
        raise ReleasedWeightsError(f"{path}: the pickled module holds no tensors")
    return state


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_release` wrote: ``path``, number of ``tensors``, ``sha256``."""

    path: Path
    tensors: int
    sha256: str


def write_state_dict(state: dict[str, torch.Tensor], dst: Path) -> Conversion:
    """``torch.save`` a plain ``{name: tensor}`` to ``dst`` (via a temporary file), check it
    reads back with ``weights_only=True``, and return what was written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    load_plain_state_dict(tmp)  # refuses anything but tensors
    tmp.replace(dst)
    return Conversion(dst, len(state), file_sha256(dst))


def convert_release(name: str, store: ModelStore, source: Path | None = None) -> Conversion:
    """Write the registry model ``name`` (a plain state dict) from its published pickled
    file.

    Parameters
    ----------
    name : a key of :data:`CONVERSIONS` (``simswap_arcface``).
    store : model store; the output goes to ``store.models_dir / REGISTRY[name].file``.
    source : the published file; default its registry place (checked like any model).

    Raises
    ------
    ReleasedWeightsError : ``name`` has no conversion, or the file holds no module.
    infra.models.ModelFileMissingError : the published file is absent (named, with URL).
    """
    if name not in CONVERSIONS:
        raise ReleasedWeightsError(
            f"{name!r} has no conversion; convertible: {', '.join(CONVERSIONS)}"
        )
    src = Path(source) if source is not None else store.path(CONVERSIONS[name])
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found")
    state = read_pickled_state_dict(src)
    return write_state_dict(state, store.models_dir / store.spec(name).file)
