"""Registry of every pretrained model the project uses, and a checked loader.

Each model is declared once in :data:`REGISTRY`: its file inside the models directory,
the SHA-256 of that file, where a connected machine downloads it, its licence and its
input contract. :class:`ModelStore` resolves a name to a verified file; a missing or
altered file raises an error that names the file, the expected checksum and the URL.

The models directory comes from :class:`infra.paths.ProjectPaths` (``paths.models_dir``
in ``params.yaml`` or ``FSP_MODELS_DIR``); tests and CI point it at ``../shared/models``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

INSIGHTFACE_LICENCE = "InsightFace pretrained models: non-commercial research only"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects at its input.

    Attributes
    ----------
    shape : tuple
        Input tensor shape; ``None`` marks a dynamic axis.
    layout : str
        ``"NCHW"`` or ``"NHWC"``; ``"W+"`` for a generative prior fed latent codes
        (B, n_latent, style_dim), whose mean/std are then 0 and 1 (no pixel normalisation).
    color : str
        Channel order of the pixels, ``"RGB"`` or ``"BGR"``; ``""`` when the input is no image.
    mean, std : float
        Normalisation applied to 0–255 pixels: ``(x - mean) / std``.
    crop : str
        The crop the model was trained on (e.g. ``"arcface-112"``).
    """

    shape: tuple[int | None, ...]
    layout: str = "NCHW"
    color: str = "RGB"
    mean: float = 127.5
    std: float = 128.0
    crop: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained model.

    Attributes
    ----------
    name : registry key.
    task : ``detection``, ``recognition``, ``landmarks``, ``headpose``, ``parsing``, ``fid``,
        ``prior`` (pretrained generative priors such as StyleGAN2), or
        ``paper_id``/``paper_pose``/``paper_3dmm`` (the networks of evaluation's ``paper``
        group, kept out of the ``recognition``/``headpose`` choices), ``restoration``
        (face restoration after ``fsp swap``).
    file : path of the weights relative to the models directory.
    sha256 : hex digest of that file; None when no digest could be pinned (the loader then
        accepts the file and logs the digest it found, so it can be pinned).
    sha256_prefix : the leading hex digits of the digest that the publisher gives (torch hub
        file names carry 8 of them); checked when ``sha256`` is None.
    url : canonical download URL.
    licence : licence of the weights.
    input : input contract.
    archive_member : when ``url`` is an archive, the member to extract as ``file``.
    package : when set, ``file`` lives inside this installed Python package (weights that a
        registry package ships) instead of the models directory.
    notes : anything a user must know (quirks, stand-ins).
    """

    name: str
    task: str
    file: str
    sha256: str | None
    url: str
    licence: str
    input: InputSpec
    archive_member: str | None = None
    package: str | None = None
    notes: str = ""
    sha256_prefix: str | None = None


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://github.com/{repo}/raw/{commit}/{path}"


_BUFFALO_L = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="scrfd_2.5g_bnkps",
            task="detection",
            file="detection/scrfd_2.5g_bnkps.onnx",
            sha256="bc24bb349491481c3ca793cf89306723162c280cb284c5a5e49df3760bf5c2ce",
            url=_gh(
                "instant-high/wav2lip-onnx",
                "e8304710e45534c0d908fb69580fc4c49d1279cd",
                "insightface_func/models/antelope/scrfd_2.5g_bnkps.onnx",
            ),
            licence=INSIGHTFACE_LICENCE,
            input=InputSpec(shape=(1, 3, None, None), color="RGB", mean=127.5, std=128.0),
            notes="SCRFD-2.5G with 5 keypoints (the `antelope` file used by SimSwap/GHOST).",
        ),
        ModelSpec(
            name="scrfd_500m",
            task="detection",
            file="detection/det_500m.onnx",
            sha256="5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
            url=_gh(
                "yukkki7/FaceAnalysisApp",
                "d4126572f7642f97f903cfab7ab73f67e99622db",
                "models/scrfd_500m.onnx",
            ),
            licence=INSIGHTFACE_LICENCE,
            input=InputSpec(shape=(1, 3, None, None), color="RGB", mean=127.5, std=128.0),
            notes="SCRFD-500M with keypoints (the buffalo_s/buffalo_sc detector); fastest.",
        ),
        ModelSpec(
            name="retinaface_mobilenet0.25",
            task="detection",
            file="detection/retinaface_mobilenet0.25_Final.pth",
            sha256="5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df",
            url=_gh(
                "cunjian/pytorch_face_landmark",
                "6f34bf9f034aa2f521952f825e6ccc567deb42d6",
                "Retinaface/weights/mobilenet0.25_Final.pth",
            ),
            licence="MIT (biubug6/Pytorch_Retinaface)",
            input=InputSpec(shape=(1, 3, None, None), color="BGR", mean=0.0, std=1.0),
            notes="RetinaFace MobileNet-0.25 (facexlib `detection_mobilenet0.25_Final.pth` "
            "family); BGR minus (104, 117, 123); keys may carry a `module.` prefix.",
        ),
        ModelSpec(
            name="scrfd_10g_bnkps",
            task="detection",
            file="detection/det_10g.onnx",
            sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
            url=_BUFFALO_L,
            archive_member="det_10g.onnx",
            licence=INSIGHTFACE_LICENCE,
            input=InputSpec(shape=(1, 3, None, None), color="RGB", mean=127.5, std=128.0),
            notes="SCRFD-10G from the buffalo_l pack (connected machines).",
        ),
        ModelSpec(
            name="mobilefacenet_128d",
            task="recognition",
            file="recognition/mobilefacenet_128d.onnx",
            sha256="f055d9c9a4d826d198c42666590fdefa0fdc1374a75ccb6306c3d1b1bf8f74c5",
            url=_gh(
                "diandianti/photo_analyze",
                "2715cee6d1f39fc63b431a4fa14b0fc4f8334309",
                "models/mobilefacenet.onnx",
            ),
            licence="see the source repository (diandianti/photo_analyze)",
            input=InputSpec(shape=(1, 3, 112, 112), mean=127.5, std=128.0, crop="arcface-112"),
            notes=(
                "Stand-in for ArcFace w600k_r50 on offline machines. Its final Reshape "
                "hard-codes batch 1; infra.identity rewrites it to [-1, D] before batching."
            ),
        ),
        ModelSpec(
            name="arcface_w600k_r50",
            task="recognition",
            file="recognition/w600k_r50.onnx",
            sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
            url=_BUFFALO_L,
            archive_member="w600k_r50.onnx",
            licence=INSIGHTFACE_LICENCE,
            input=InputSpec(shape=(None, 3, 112, 112), mean=127.5, std=127.5, crop="arcface-112"),
            notes="ArcFace ResNet-50 trained on WebFace600K, 512-d (buffalo_l).",
        ),
        ModelSpec(
            name="facemesh_468",
            task="landmarks",
            file="landmarks/facemesh_468.onnx",
            sha256="d543107cfab6a216501b37667ef1520950410dfe02d4c186e6b154fc91345ee1",
            url=_gh(
                "iperov/DeepFaceLive",
                "fc7b787bda2b8c186e142c52857458eea3a935ed",
                "modelhub/onnx/FaceMesh/FaceMesh.onnx",
            ),
            licence="Apache-2.0 (MediaPipe FaceMesh)",
            input=InputSpec(shape=(1, 192, 192, 3), layout="NHWC", mean=0.0, std=255.0),
        ),
        ModelSpec(
            name="pfld_68",
            task="landmarks",
            file="landmarks/pfld_68.onnx",
            sha256="7d7bbd5c6a1d9272e58d9773898284a1905d872eba9a662df9b5f20f1ba6f83e",
            url=_gh(
                "cunjian/pytorch_face_landmark",
                "6f34bf9f034aa2f521952f825e6ccc567deb42d6",
                "onnx/pfld.onnx",
            ),
            licence="see the source repository (cunjian/pytorch_face_landmark)",
            input=InputSpec(shape=(None, 3, 112, 112), mean=0.0, std=255.0),
        ),
        ModelSpec(
            name="fsanet_1x1",
            task="headpose",
            file="headpose/fsanet_1x1.onnx",
            sha256="d85e90cb4b9d3a87e81bbfdcfcd130cbe0e175407042e439a570aa396c44eda6",
            url=_gh(
                "omasaht/headpose-fsanet-pytorch",
                "002549c981b607f722e0810d999afcde7e5aaa66",
                "pretrained/fsanet-1x1-iter-688590.onnx",
            ),
            licence="MIT",
            input=InputSpec(shape=(1, 3, 64, 64), color="BGR", mean=127.5, std=128.0),
        ),
        ModelSpec(
            name="fsanet_var",
            task="headpose",
            file="headpose/fsanet_var.onnx",
            sha256="2877b1db98e3dc66468e90df8db4a21059facd1c3f107af91c6d4fe6476a03e1",
            url=_gh(
                "omasaht/headpose-fsanet-pytorch",
                "002549c981b607f722e0810d999afcde7e5aaa66",
                "pretrained/fsanet-var-iter-688590.onnx",
            ),
            licence="MIT",
            input=InputSpec(shape=(1, 3, 64, 64), color="BGR", mean=127.5, std=128.0),
        ),
        ModelSpec(
            name="unet_faceparsing_19cls",
            task="parsing",
            file="parsing/unet_faceparsing_19cls.pth",
            sha256="88db73a3e90fe36ac12ba7cd8704610cda55947c04ddd5a70e6ab3a54cdb06eb",
            url=_gh(
                "SimonEnkel/lightweight-unet-face-parsing",
                "a50774255c4f743e41740481f818f2d011bd8536",
                "model_best.pth",
            ),
            licence="see the source repository (SimonEnkel/lightweight-unet-face-parsing)",
            input=InputSpec(shape=(None, 3, 256, 256), mean=127.5, std=127.5),
        ),
        ModelSpec(
            name="facexlib_bisenet",
            task="parsing",
            file="parsing/parsing_bisenet.pth",
            sha256=None,
            url="https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
            licence="MIT (facexlib; BiSeNet face-parsing weights by zllrunning)",
            input=InputSpec(shape=(None, 3, 512, 512), mean=0.0, std=1.0),
            notes="19-class CelebAMask-HQ parser; ImageNet mean/std on [0, 1] RGB; 53,289,463 "
            "bytes. No digest could be pinned offline.",
        ),
        ModelSpec(
            name="facexlib_parsenet",
            task="parsing",
            file="parsing/parsing_parsenet.pth",
            sha256=None,
            url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            licence="MIT (facexlib)",
            input=InputSpec(shape=(None, 3, 512, 512), mean=127.5, std=127.5),
            notes="19-class CelebAMask-HQ parser from facexlib; [-1, 1] RGB. No digest could "
            "be pinned offline.",
        ),
        ModelSpec(
            name="cosface_sphere20",
            task="paper_id",
            file="recognition/cosface_sphere20_ACC99.28.pth",
            sha256=None,
            url="https://pan.baidu.com/s/1uOBATynzBTzZwrIKC4kcAA (password 69e6; linked from "
            "https://github.com/MuggleWang/CosFace_pytorch README)",
            licence="no licence stated (MuggleWang/CosFace_pytorch); trained on CASIA-WebFace",
            input=InputSpec(
                shape=(None, 3, 112, 96), mean=127.5, std=127.5, crop="sphereface-112x96"
            ),
            notes="CosFace sphere20 (`net.py: sphere`), 512-d, LFW ~99.2 %; the `ACC99.28.pth` "
            "state_dict the face-swap evaluations load. Evaluation's `paper` group only "
            "(infra.paper_models); not an ONNX recogniser. No digest could be pinned offline.",
        ),
        ModelSpec(
            name="hopenet_robust_alpha1",
            task="paper_pose",
            file="headpose/hopenet_robust_alpha1.pkl",
            sha256=None,
            url="https://drive.google.com/open?id=1m25PrSE7g9D2q2XJVMR6IA7RaCvWSzCR (linked from "
            "https://github.com/natanielruiz/deep-head-pose README)",
            licence="Apache-2.0 (natanielruiz/deep-head-pose); trained on 300W-LP",
            input=InputSpec(shape=(None, 3, 224, 224), mean=0.0, std=255.0),
            notes="Hopenet ResNet-50, 66 bins × 3 angles (`300W-LP, alpha 1, robust to image "
            "quality`); ImageNet mean/std on [0, 1] RGB. Evaluation's `paper` group only. No "
            "digest could be pinned offline.",
        ),
        ModelSpec(
            name="deep3dfacerecon_resnet50",
            task="paper_3dmm",
            file="face3d/deep3dfacerecon_epoch_20.pth",
            sha256=None,
            url="https://drive.google.com/drive/folders/1liaIxn9smpudjjqMaWWRpP0mXRW_qRPP "
            "(checkpoints/<model_name>/epoch_20.pth; linked from "
            "https://github.com/sicxu/Deep3DFaceRecon_pytorch README)",
            licence="MIT (sicxu/Deep3DFaceRecon_pytorch code); 3DMM basis: Basel Face Model "
            "2009 licence",
            input=InputSpec(shape=(None, 3, 224, 224), mean=0.0, std=255.0),
            notes="Deep3DFaceRecon R-Net (ResNet-50 → 257 coefficients; expression = [80:144]); "
            "the training checkpoint, network under `net_recon`. Evaluation's `paper` group "
            "only. No digest could be pinned offline.",
        ),
        ModelSpec(
            name="inception_v3_fid",
            task="fid",
            file="fid/pt_inception-2015-12-05-6726825d.pth",
            sha256=None,
            sha256_prefix="6726825d",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            licence="Apache-2.0 (pytorch-fid; weights converted from TensorFlow's FID Inception)",
            input=InputSpec(shape=(None, 3, 299, 299), mean=0.0, std=255.0),
            notes="FID InceptionV3 of pytorch-fid (pool3, 2048-d): a state_dict of torchvision's "
            "Inception3 with the FID blocks. pytorch-fid publishes only the first 8 hex digits "
            "of its SHA-256 (in the file name, torch hub's rule); the store checks them.",
        ),
        ModelSpec(
            name="vgg19_imagenet",
            task="backbone",
            file="vgg/vgg19-dcbb9e9d.pth",
            sha256=None,
            sha256_prefix="dcbb9e9d",
            url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            licence="BSD-3-Clause (torchvision code); weights trained on ImageNet, whose "
            "non-commercial research terms apply",
            input=InputSpec(shape=(None, 3, None, None), mean=0.0, std=255.0),
            notes="torchvision `vgg19(weights=VGG19_Weights.IMAGENET1K_V1)` state dict; "
            "Korshunova swapper's content and style losses. ImageNet mean (0.485, 0.456, 0.406) "
            "and std (0.229, 0.224, 0.225) per channel on [0, 1] RGB (training.perceptual). "
            "torch hub names the file after the first 8 hex digits of its SHA-256; the store "
            "checks them.",
        ),
        ModelSpec(
            name="vgg16_imagenet",
            task="backbone",
            file="vgg/vgg16-397923af.pth",
            sha256=None,
            sha256_prefix="397923af",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            licence="BSD-3-Clause (torchvision code); weights trained on ImageNet, whose "
            "non-commercial research terms apply",
            input=InputSpec(shape=(None, 3, None, None), mean=0.0, std=255.0),
            notes="torchvision `vgg16(weights=VGG16_Weights.IMAGENET1K_V1)` state dict: the "
            "backbone LPIPS (the `lpips` package, net='vgg') runs under its own linear layers, "
            "which the package ships. torch hub names the file after the first 8 hex digits "
            "of its SHA-256; the store checks them.",
        ),
        ModelSpec(
            name="lpips_vgg_v0.1",
            task="backbone",
            file="weights/v0.1/vgg.pth",
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            url="https://pypi.org/project/lpips/0.1.4/",
            licence="BSD-2-Clause (richzhang/PerceptualSimilarity)",
            input=InputSpec(shape=(None, 3, None, None), mean=127.5, std=127.5),
            package="lpips",
            notes="LPIPS v0.1 linear calibration layers over VGG-16 (Zhang et al. 2018), shipped "
            "in the lpips wheel; the VGG-16 backbone under them is vgg16_imagenet.",
        ),
        ModelSpec(
            name="stylegan2_ffhq_1024",
            task="prior",
            file="stylegan2/stylegan2-ffhq-config-f.pt",
            sha256=None,
            url="https://drive.google.com/file/d/1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT/view"
            "?usp=sharing",
            licence="NVIDIA Source Code License-NC (NVlabs/stylegan2: the original FFHQ "
            "weights, non-commercial use only); converted with rosinality/stylegan2-pytorch "
            "(MIT code)",
            input=InputSpec(shape=(None, 18, 512), layout="W+", color="", mean=0.0, std=1.0),
            notes="NVIDIA's StyleGAN2 FFHQ 1024-px config-F generator converted to PyTorch by "
            "rosinality's convert_weight.py: {'g_ema': Generator(1024, 512, 8, "
            "channel_multiplier=2) state dict, 'latent_avg': (512,) mean w}; the file pSp, e4e "
            "and RAFSwap load (pSp README, 'FFHQ StyleGAN'). Loaded strictly by "
            "training.priors.stylegan2.load_stylegan2_ffhq; input is a W+ code (B, 18, 512), "
            "output (B, 3, 1024, 1024) RGB in about [-1, 1]. No digest could be pinned "
            "offline: the loader logs the SHA-256 of the file it finds.",
        ),
        ModelSpec(
            name="psp_ffhq_encode",
            task="prior",
            file="psp/psp_ffhq_encode.pt",
            sha256=None,
            url="https://drive.google.com/file/d/1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0/view"
            "?usp=sharing",
            licence="MIT (eladrich/pixel2style2pixel code); the weights were trained on FFHQ "
            "(NVIDIA, images under CC BY-NC-SA 4.0) through NVIDIA's StyleGAN2 FFHQ generator, "
            "which the file also holds (NVIDIA Source Code License-NC): non-commercial use only",
            input=InputSpec(
                shape=(None, 3, 256, 256), mean=127.5, std=127.5, crop="ffhq-align-256"
            ),
            notes="pSp 'StyleGAN Inversion' checkpoint (pSp README): {'state_dict': pSp "
            "state dict, 'encoder.*' = GradualStyleEncoder(50, 'ir_se') (621 keys, 267,136,704 "
            "parameters) and 'decoder.*' = rosinality StyleGAN2 1024-px generator, "
            "'latent_avg': average w per W+ row, 'opts': dict}. Loaded strictly by "
            "training.priors.psp.load_psp_ffhq_encoder (encoder and latent_avg): FFHQ-aligned "
            "faces resized to 256 px, [-1, 1] RGB → codes (B, 18, 512), to which latent_avg "
            "is added for W+. No digest could be pinned offline.",
        ),
        ModelSpec(
            name="e4e_ffhq_encode",
            task="prior",
            file="psp/e4e_ffhq_encode.pt",
            sha256=None,
            url="https://drive.google.com/file/d/1cUv_reLE6k3604or78EranS7XzuVMWeO/view"
            "?usp=sharing",
            licence="MIT (omertov/encoder4editing code); the weights were trained on FFHQ "
            "(NVIDIA, images under CC BY-NC-SA 4.0) through NVIDIA's StyleGAN2 FFHQ generator, "
            "which the file also holds (NVIDIA Source Code License-NC): non-commercial use only",
            input=InputSpec(
                shape=(None, 3, 256, 256), mean=127.5, std=127.5, crop="ffhq-align-256"
            ),
            notes="e4e 'FFHQ Inversion' checkpoint (e4e README), in pSp's format: "
            "'encoder.*' = Encoder4Editing(50, 'ir_se'), the same 621 keys as pSp's encoder, "
            "with codes w + Δ_i. Loaded strictly by training.priors.psp."
            "load_psp_ffhq_encoder(store, kind='e4e'); input and latent_avg as "
            "psp_ffhq_encode. No digest could be pinned offline.",
        ),
        ModelSpec(
            name="ddpm_ema_celebahq_256",
            task="prior",
            file="ddpm/ddpm-ema-celebahq-256/diffusion_pytorch_model.bin",
            sha256=None,
            url="https://huggingface.co/google/ddpm-ema-celebahq-256/resolve/main/"
            "diffusion_pytorch_model.bin",
            licence="Apache-2.0 (google/ddpm-ema-celebahq-256 model card); trained on "
            "CelebA-HQ, whose CelebA source is for non-commercial research",
            input=InputSpec(shape=(None, 3, 256, 256), mean=127.5, std=127.5, crop="celebahq-256"),
            notes="Ho et al. 2020's 256-px CelebA-HQ DDPM (EMA weights, 113.7 M parameters, "
            "linear 1000-step schedule) in diffusers format. The folder is the model: it must "
            "also hold config.json and scheduler_config.json from "
            "https://huggingface.co/google/ddpm-ema-celebahq-256/tree/main. Loaded by "
            "training.priors.ddpm.load_pretrained_unet(store.path(name).parent). A stand-in for "
            "Facke's FFHQ 256-px prior (ilvr_adm ffhq_10m.pt, guided-diffusion format, not "
            "converted here).",
        ),
        ModelSpec(
            name="dlib_resnet",
            task="recognition",
            file="models/dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            url="https://pypi.org/project/face-recognition-models/0.3.0/",
            licence="CC0 (dlib models by Davis King, via ageitgey/face_recognition_models)",
            input=InputSpec(shape=(1, 3, 150, 150), mean=0.0, std=1.0, crop="dlib-chip-150"),
            package="face_recognition_models",
            notes="dlib ResNet 128-d descriptor; evaluation's independent recogniser.",
        ),
        ModelSpec(
            name="dlib_shape_predictor_5",
            task="landmarks",
            file="models/shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            url="https://pypi.org/project/face-recognition-models/0.3.0/",
            licence="CC0 (dlib models by Davis King, via ageitgey/face_recognition_models)",
            input=InputSpec(shape=(1, 3, None, None), mean=0.0, std=1.0),
            package="face_recognition_models",
            notes="dlib 5-point shape predictor that places the descriptor's face chip.",
        ),
        ModelSpec(
            name="ghost_unet_2blocks",
            task="swapper",
            file="swappers/ghost/G_unet_2blocks.pth",
            sha256=None,
            url="https://github.com/sberbank-ai/sber-swap/releases/download/sber-swap-v2.0/"
            "G_unet_2blocks.pth",
            licence="Apache-2.0 (ai-forever/ghost, formerly sberbank-ai/sber-swap)",
            input=InputSpec(
                shape=(None, 3, 256, 256), mean=127.5, std=127.5, crop="insightface-5pose-224@256"
            ),
            notes="Released GHOST generator, AEI_Net(backbone='unet', num_blocks=2, c_id=512): "
            "a plain state dict, loaded into AEINet through training/released/ghost.py. No "
            "digest could be pinned offline.",
        ),
        ModelSpec(
            name="ghost_arcface_iresnet100",
            task="swapper_id",
            file="swappers/ghost/backbone.pth",
            sha256=None,
            url="https://github.com/sberbank-ai/sber-swap/releases/download/arcface/backbone.pth",
            licence=INSIGHTFACE_LICENCE,
            input=InputSpec(shape=(None, 3, 112, 112), mean=127.5, std=127.5, crop="arcface-112"),
            notes="ArcFace IResNet-100 (insightface arcface_torch names) that GHOST's generator "
            "was trained with; raw 512-d output, not normalised. No digest pinned offline.",
        ),
        ModelSpec(
            name="simswap_224",
            task="swapper",
            file="swappers/simswap/people/latest_net_G.pth",
            sha256=None,
            url="https://github.com/neuralchen/SimSwap/releases/download/1.0/checkpoints.zip",
            archive_member="checkpoints/people/latest_net_G.pth",
            licence="CC BY-NC 4.0 (neuralchen/SimSwap)",
            input=InputSpec(
                shape=(None, 3, 224, 224), mean=0.0, std=255.0, crop="insightface-5pose-224"
            ),
            notes="Released SimSwap 224-px generator, Generator_Adain_Upsample(n_blocks=9, "
            "deep=False) of models/fs_networks.py: a plain state dict, loaded into "
            "SimSwapGenerator through training/released/simswap.py. No digest pinned offline.",
        ),
        ModelSpec(
            name="simswap_arcface_release",
            task="pickled",
            file="swappers/simswap/arcface_checkpoint.tar",
            sha256=None,
            url="https://github.com/neuralchen/SimSwap/releases/download/1.0/"
            "arcface_checkpoint.tar",
            licence="CC BY-NC 4.0 (neuralchen/SimSwap)",
            input=InputSpec(shape=(None, 3, 112, 112), mean=0.0, std=255.0, crop="arcface-112"),
            notes="SimSwap's ArcFace as published: a PICKLED MODULE (models.arcface_models."
            "ResNet), never loaded at run time; `fsp convert-released simswap_arcface` turns it "
            "into `simswap_arcface` once. Keep it as downloaded (it is not a tar archive).",
        ),
        ModelSpec(
            name="simswap_arcface",
            task="swapper_id",
            file="swappers/simswap/arcface_state_dict.pth",
            sha256=None,
            url="https://github.com/neuralchen/SimSwap/releases/download/1.0/"
            "arcface_checkpoint.tar",
            licence="CC BY-NC 4.0 (neuralchen/SimSwap)",
            input=InputSpec(shape=(None, 3, 112, 112), mean=0.0, std=255.0, crop="arcface-112"),
            notes="Plain state dict written by `fsp convert-released simswap_arcface` from "
            "`simswap_arcface_release`; [0, 1] RGB then ImageNet mean/std per channel; 512-d.",
        ),
        ModelSpec(
            name="gfpgan_1.4",
            task="restoration",
            file="restoration/gfpgan_1.4.onnx",
            sha256=None,
            url="https://github.com/facefusion/facefusion-assets/releases/download/"
            "models-3.0.0/gfpgan_1.4.onnx",
            licence="Apache-2.0 (TencentARC/GFPGAN code and v1.4 weights; the ONNX conversion "
            "from facefusion/facefusion-assets)",
            input=InputSpec(
                shape=(1, 3, 512, 512), mean=127.5, std=127.5, crop="gfpgan-512 (FFHQ 5-point)"
            ),
            notes="GFPGAN v1.4 face restoration as ONNX: input `input` (1, 3, 512, 512) RGB in "
            "[-1, 1] on facexlib's 512-px five-point template, output (1, 3, 512, 512) in "
            "[-1, 1]; `fsp swap` restores swapped faces with it when present "
            "(swap.super_resolution). No digest could be pinned offline.",
        ),
    ]
}


def model_names(task: str) -> list[str]:
    """Registered model names of one ``task`` (e.g. ``recognition``), in registry order;
    every list of model names a config accepts comes from here."""
    return [name for name, spec in REGISTRY.items() if spec.task == task]


def check_model_name(name: str, task: str) -> str:
    """``name`` if it is a registered model of ``task``; else ValueError listing the
    registered choices (for config validators, whose error names the setting)."""
    choices = model_names(task)
    if name not in choices:
        raise ValueError(f"{name!r} is not a registered {task} model; choose one of {choices}")
    return name


class ModelError(RuntimeError):
    """A registered model cannot be used."""


class UnknownModelError(ModelError, KeyError):
    """The name is not in :data:`REGISTRY`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ModelFileMissingError(ModelError, FileNotFoundError):
    """The model's file is not in the models directory."""


class ModelChecksumError(ModelError):
    """The model's file exists but its SHA-256 differs from the registry."""


def _where_to_get(spec: ModelSpec, target: Path) -> str:
    if spec.package:
        return f"Install the {spec.package!r} package ({spec.url}; licence: {spec.licence})."
    src = spec.url if spec.archive_member is None else f"{spec.url} (member {spec.archive_member})"
    return f"Download it from {src} and place it at {target} (licence: {spec.licence})."


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (some weight packages
    import modules that are no longer installed)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<package {package} not installed>")
    return Path(spec.submodule_search_locations[0])


@lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (cached by path, size and modification time)."""
    st = path.stat()
    return _sha256(path.resolve(), st.st_size, st.st_mtime_ns)


#: File in a models directory listing randomly initialised stand-ins (name → SHA-256) that
#: :mod:`infra.stand_ins` wrote there for tests and benchmarks.
STAND_INS_FILE = "stand_ins.json"


class ModelStore:
    """Resolves registry names to verified files in one models directory.

    A models directory may also hold :data:`STAND_INS_FILE`, written by
    :func:`infra.stand_ins.write_stand_in`: registered models replaced by randomly
    initialised weights of the published layout (tests, benchmarks). A file listed there is
    accepted when its SHA-256 is the one listed, with a warning that it is a stand-in.

    Parameters
    ----------
    models_dir : directory laid out like ``../shared/models`` (``detection/…``, …).
    """

    def __init__(self, models_dir: Path | str):
        self.models_dir = Path(models_dir)
        listing = self.models_dir / STAND_INS_FILE
        self.stand_ins: dict[str, str] = (
            json.loads(listing.read_text()) if listing.is_file() else {}
        )

    def is_stand_in(self, name: str) -> bool:
        """Whether ``name`` resolves to a randomly initialised stand-in here."""
        return name in self.stand_ins

    @staticmethod
    def spec(name: str) -> ModelSpec:
        """The registry entry; raises :class:`UnknownModelError` for an unknown name."""
        try:
            return REGISTRY[name]
        except KeyError:
            known = ", ".join(sorted(REGISTRY))
            raise UnknownModelError(f"unknown model {name!r}; registered: {known}") from None

    def path(self, name: str) -> Path:
        """Absolute path of the verified model file.

        Raises
        ------
        UnknownModelError : name not registered.
        ModelFileMissingError : file absent.
        ModelChecksumError : file present with another SHA-256.
        """
        spec = self.spec(name)
        target = (
            _package_dir(spec.package) / spec.file if spec.package else self.models_dir / spec.file
        ).resolve()
        if not target.is_file():
            expected = (
                f"sha256 {spec.sha256}"
                if spec.sha256
                else f"sha256 starting {spec.sha256_prefix}"
                if spec.sha256_prefix
                else "sha256 not pinned"
            )
            raise ModelFileMissingError(
                f"model {name!r}: file {target} is missing (expected {expected}). "
                + _where_to_get(spec, target)
            )
        actual = file_sha256(target)
        if name in self.stand_ins and not spec.package:
            if actual != self.stand_ins[name]:
                raise ModelChecksumError(
                    f"model {name!r}: stand-in {target} has sha256 {actual}, "
                    f"{STAND_INS_FILE} lists {self.stand_ins[name]}"
                )
            log.warning("model %r: %s is a randomly initialised stand-in", name, target)
            return target
        if spec.sha256 is None and spec.sha256_prefix and not actual.startswith(spec.sha256_prefix):
            raise ModelChecksumError(
                f"model {name!r}: file {target} has sha256 {actual}, expected a digest "
                f"starting {spec.sha256_prefix}. " + _where_to_get(spec, target)
            )
        if spec.sha256 is None:
            log.warning(
                "model %r: checksum not pinned in the registry; using %s (sha256 %s)",
                name,
                target,
                actual,
            )
        elif actual != spec.sha256:
            raise ModelChecksumError(
                f"model {name!r}: file {target} has sha256 {actual}, expected {spec.sha256}. "
                "The file is corrupt or a different version. " + _where_to_get(spec, target)
            )
        return target

    def available(self, name: str) -> bool:
        """True when the model's file is present and verified."""
        try:
            self.path(name)
        except ModelError:
            return False
        return True
