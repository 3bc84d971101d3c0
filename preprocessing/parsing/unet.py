"""Small U-Net face parser (``unet_faceparsing_19cls``), run with PyTorch.

Weights: ``parsing/unet_faceparsing_19cls.pth`` from SimonEnkel/lightweight-unet-face-parsing
(a plain state_dict, 467K parameters, "weak: ~0.62 mean Dice"). Architecture as in
``../shared/README.md``: two-level U-Net without normalisation layers; input 3×256×256 RGB
scaled ``(x/255 - 0.5)/0.5``; 19 logits whose class ``k`` is CelebAMask-HQ id
:data:`MODEL_TO_CELEBAMASK` ``[k]``.

Two things the README leaves open were measured on the first 60 CelebAMask-HQ images of
``../shared/faces`` (face-interior mIoU, :mod:`preprocessing.benchmarks.mask_miou`): the
decoders concatenate the upsampled features *before* the skip features, and the input is
RGB (0.669; BGR 0.076; skip first 0.006; skip first and BGR 0.000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from preprocessing.parsing.base import check_faces

#: Model class k → CelebAMask-HQ class id (``../shared/README.md``).
MODEL_TO_CELEBAMASK = np.array(
    [0, 11, 6, 1, 9, 5, 2, 16, 8, 3, 12, 7, 14, 13, 10, 17, 18, 4, 15], dtype=np.uint8
)

#: Native input side, pixels.
INPUT_SIZE = 256


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class FaceParsingUNet(nn.Module):
    """The two-level U-Net whose state_dict keys the weight file uses.

    Parameters
    ----------
    num_classes : output logits.
    skip_first : concatenate ``[skip, upsampled]`` instead of ``[upsampled, skip]`` in the
        decoders (False matches the released weights).

    Input (N, 3, H, W) float32 with H, W multiples of 4; output (N, num_classes, H, W) logits.
    """

    def __init__(self, num_classes: int = 19, skip_first: bool = False):
        super().__init__()
        self.skip_first = skip_first
        self.enc1 = _double_conv(3, 32)
        self.enc2 = _double_conv(32, 64)
        self.bottleneck = _double_conv(64, 128)
        self.up1 = nn.ConvTranspose2d(128, 64, 2, stride=2)
        self.dec1 = _double_conv(128, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = _double_conv(64, 32)
        self.out = nn.Conv2d(32, num_classes, 1)

    def _cat(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([skip, up] if self.skip_first else [up, skip], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d1 = self.dec1(self._cat(self.up1(b), e2))
        d2 = self.dec2(self._cat(self.up2(d1), e1))
        return self.out(d2)


class UNetBackend:
    """:class:`~preprocessing.parsing.base.MaskBackend` running the small U-Net.

    Parameters
    ----------
    weights : path of the verified state_dict (``ModelStore.path("unet_faceparsing_19cls")``).
    device : torch device string (``"cpu"``, ``"cuda"``).
    threads : torch intra-op threads on the CPU (None leaves the process setting alone).
    batch_size : crops per forward pass (4 keeps a CPU worker under 1 GB: batch 16 peaks at
        1.6 GB with the same speed).
    skip_first, bgr : decoder concatenation order and input channel order (the defaults
        match the released weights; the options exist to re-check that measurement).
    """

    name = "unet"
    crop_template = "ffhq"
    crop_size = INPUT_SIZE
    classes: tuple[int, ...] = tuple(sorted(int(c) for c in MODEL_TO_CELEBAMASK))
    needs_landmarks = False

    def __init__(
        self,
        weights: Path | str,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 4,
        skip_first: bool = False,
        bgr: bool = False,
    ):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.bgr = bool(bgr)
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        self.model = FaceParsingUNet(len(MODEL_TO_CELEBAMASK), skip_first=skip_first)
        self.model.load_state_dict(state, strict=True)
        self.model.eval().to(self.device)
        self.lut = torch.as_tensor(MODEL_TO_CELEBAMASK, device=self.device)

    @torch.no_grad()
    def parse(self, faces: np.ndarray, landmarks468: np.ndarray | None = None) -> np.ndarray:
        """Label maps of FFHQ-aligned crops.

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB crops on the ``ffhq`` template; S other than 256 is
            resized to 256 (bilinear) and the logits resized back to S before the argmax.
        landmarks468 : ignored.

        Returns
        -------
        (N, S, S) uint8 CelebAMask-HQ class ids.

        Raises
        ------
        ValueError : ``faces`` is not (N, S, S, 3) uint8.
        """
        faces = check_faces(faces)
        n, size = len(faces), faces.shape[1]
        out = np.empty((n, size, size), np.uint8)
        for start in range(0, n, self.batch_size):
            batch = torch.from_numpy(faces[start : start + self.batch_size]).to(self.device)
            x = batch.permute(0, 3, 1, 2).float()
            if self.bgr:
                x = x.flip(1)
            x = (x / 255.0 - 0.5) / 0.5
            if size != INPUT_SIZE:
                x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear")
            logits = self.model(x)
            if size != INPUT_SIZE:
                logits = F.interpolate(logits, size=(size, size), mode="bilinear")
            labels = self.lut[logits.argmax(1)]
            out[start : start + len(batch)] = labels.cpu().numpy()
        return out
