"""facexlib's CelebAMask-HQ parsers (BiSeNet, ParseNet) behind the mask-backend interface.

Weights (not obtainable offline; see :data:`infra.models.REGISTRY`):
``parsing/parsing_bisenet.pth`` (facexlib v0.2.0; zllrunning/face-parsing.PyTorch BiSeNet)
and ``parsing/parsing_parsenet.pth`` (facexlib v0.2.2; PSFRGAN's ParseNet). Both are loaded
with ``facexlib.parsing.init_parsing_model(model_name, device, model_rootpath)`` only after
:meth:`infra.models.ModelStore.path` has found the file, so facexlib never downloads.

Pre/post-processing follows facexlib's own callers: 512×512 RGB input; BiSeNet uses ImageNet
mean/std on [0, 1] (``inference/inference_parsing.py``), ParseNet ``(x/255 - 0.5)/0.5``
(``utils/face_restoration_helper.py``); the first output holds the 19 logits. ParseNet
predicts CelebAMask-HQ ids directly; BiSeNet uses face-parsing.PyTorch's order (0 bg, 1 skin,
2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g, 7 l_ear, 8 r_ear, 9 ear_r, 10 nose,
11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth, 17 hair, 18 hat), remapped
with :data:`BISENET_TO_CELEBAMASK`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from preprocessing.parsing.base import ALL_CLASSES, check_faces

#: Native input side of both networks, pixels.
INPUT_SIZE = 512

#: BiSeNet (face-parsing.PyTorch) class k → CelebAMask-HQ class id.
BISENET_TO_CELEBAMASK = np.array(
    [0, 1, 6, 7, 4, 5, 3, 8, 9, 15, 2, 10, 11, 12, 17, 16, 18, 13, 14], dtype=np.uint8
)
#: ParseNet class k → CelebAMask-HQ class id (identity: trained on CelebAMask-HQ ids).
PARSENET_TO_CELEBAMASK = np.arange(19, dtype=np.uint8)

#: Per-model settings: registry name, facexlib name, mean, std (on 0–1 RGB), label map.
FACEXLIB_MODELS: dict[str, dict] = {
    "bisenet": {
        "registry": "facexlib_bisenet",
        "facexlib_name": "bisenet",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "to_celebamask": BISENET_TO_CELEBAMASK,
    },
    "parsenet": {
        "registry": "facexlib_parsenet",
        "facexlib_name": "parsenet",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "to_celebamask": PARSENET_TO_CELEBAMASK,
    },
}


class FacexlibBackend:
    """:class:`~preprocessing.parsing.base.MaskBackend` around a facexlib parsing network.

    Parameters
    ----------
    kind : ``"bisenet"`` or ``"parsenet"`` (selects normalisation and label order).
    model : the network (``facexlib.parsing.BiSeNet`` / ``ParseNet``), weights loaded; it is
        put in eval mode on ``device``. See :func:`load_facexlib_model` for real weights.
    device : torch device string.
    batch_size : crops per forward pass.
    input_size : side the network runs at (512, facexlib's size for the released weights;
        smaller only for tests with small random-weight networks).

    Raises
    ------
    KeyError : unknown ``kind``.
    """

    crop_template = "ffhq"
    crop_size = INPUT_SIZE
    classes = ALL_CLASSES
    needs_landmarks = False

    def __init__(
        self,
        kind: str,
        model: nn.Module,
        device: str = "cpu",
        batch_size: int = 4,
        input_size: int = INPUT_SIZE,
    ):
        settings = FACEXLIB_MODELS[kind]
        self.name = kind
        self.input_size = int(input_size)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = model.eval().to(self.device)
        self.mean = torch.tensor(settings["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(settings["std"], device=self.device).view(1, 3, 1, 1)
        self.lut = torch.as_tensor(settings["to_celebamask"], device=self.device)

    @torch.no_grad()
    def parse(self, faces: np.ndarray, landmarks468: np.ndarray | None = None) -> np.ndarray:
        """Label maps of FFHQ-aligned crops.

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB crops on the ``ffhq`` template; any S (resized to
            ``input_size`` bilinearly, the logits resized back to S before the argmax).
        landmarks468 : ignored.

        Returns
        -------
        (N, S, S) uint8 CelebAMask-HQ class ids in [0, 18].

        Raises
        ------
        ValueError : ``faces`` is not (N, S, S, 3) uint8.
        """
        faces = check_faces(faces)
        n, size = len(faces), faces.shape[1]
        out = np.empty((n, size, size), np.uint8)
        for start in range(0, n, self.batch_size):
            batch = torch.from_numpy(faces[start : start + self.batch_size]).to(self.device)
            x = batch.permute(0, 3, 1, 2).float() / 255.0
            if size != self.input_size:
                x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear")
            logits = self.model((x - self.mean) / self.std)[0]
            if logits.shape[-1] != size:
                logits = F.interpolate(logits, size=(size, size), mode="bilinear")
            out[start : start + len(batch)] = self.lut[logits.argmax(1)].cpu().numpy()
        return out


def load_facexlib_model(kind: str, models_dir: Path | str, device: str = "cpu") -> nn.Module:
    """The facexlib network with its real weights from ``<models_dir>/parsing``.

    Parameters
    ----------
    kind : ``"bisenet"`` or ``"parsenet"``.
    models_dir : the models directory (the weight file must already be there and verified;
        facexlib would otherwise try to download it).
    device : torch device string.

    Returns
    -------
    The network in eval mode on ``device``.
    """
    from facexlib.parsing import init_parsing_model

    return init_parsing_model(
        model_name=FACEXLIB_MODELS[kind]["facexlib_name"],
        device=device,
        model_rootpath=str(Path(models_dir) / "parsing"),
    )
