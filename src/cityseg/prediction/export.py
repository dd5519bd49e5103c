"""`cityseg export`: a training checkpoint -> a folder a runtime without cityseg (or without Python) can use.

model.safetensors (tensors only), model.onnx (uint8 RGB (N, H, W, 3) -> logits (N, 19, H, W), normalisation and
padding inside) and card.json/md. onnxruntime's logits must agree with torch's on a few images (PARITY_RULE) or
nothing is written. The files are made in a locked staging folder beside OUT (a later run removes those nobody
holds: a killed export's), then moved into OUT one by one: other files in OUT are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cityseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from cityseg.errors import UserError, describe_error
from cityseg.fileio import atomic_write_text, file_sha256
from cityseg.prediction.card import build_card, card_json_text, card_markdown, read_evaluation
from cityseg.prediction.deployed import (
    CARD_JSON,
    CARD_MD,
    ONNX_FILE,
    WEIGHTS_FILE,
    load_weights,
    read_card,
    weights_metadata,
)
from cityseg.prediction.image_files import read_user_image
from cityseg.prediction.inference import forward_padded
from cityseg.training.config import SIDE_MULTIPLE
from cityseg.training.model import load_model, onnx_refusal
from cityseg.training.model_names import model_title_of

ONNX_INPUT, ONNX_OUTPUT = "image", "logits"
# The graph pads to SIDE_MULTIPLE by reflection, which needs each pad shorter than its side: sides from half the
# multiple plus one work (each export checks one), smaller ones fail in the Pad node, named to say this minimum.
MIN_SIDE = SIDE_MULTIPLE // 2 + 1
# Traced for sides above SIDE_MULTIPLE: torch.export specialises a size that pads to one 1x1 bottleneck cell.
TRACE_MIN_SIDE = SIDE_MULTIPLE + 1
MIN_AGREEMENT = 0.999  # share of pixels whose argmax must be identical, per image
EXPORT_FILES = (("weights", WEIGHTS_FILE), ("onnx", ONNX_FILE))
LOGIT_RTOL = 1e-3  # max |onnx - torch| allowed, relative to the image's max |logit| (float32 round-off is ~1e-6)
PARITY_RULE = (
    f"per image: argmax identical on >= {100 * MIN_AGREEMENT:.1f}% of pixels and max |logit_onnx - logit_torch| <= "
    f"{LOGIT_RTOL:g} x max |logit_torch|"
)
PARITY_RUNTIME = "onnxruntime CPUExecutionProvider vs torch float32 on CPU, same weights"
CHECK_FRAME = (384, 192)  # synthetic street scene the default check images are cut from (width, height)


class DeployedNetwork(nn.Module):
    """uint8 RGB (N, H, W, 3) -> logits (N, C, H, W): what `cityseg predict` computes, in one graph."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # the constants and formula of transforms.normalize, as buffers: its per-device cache must not be traced
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std)

    def forward(self, image: Tensor) -> Tensor:
        normalised = image.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift  # (N, 3, H, W)
        height, width = normalised.shape[-2:]
        # Reflect, as inference.pad_to_multiple does whenever the pad is shorter than the side (MIN_SIDE).
        padded = F.pad(normalised, (0, -width % SIDE_MULTIPLE, 0, -height % SIDE_MULTIPLE), mode="reflect")
        return self.network(padded)[..., :height, :width]  # (N, C, H, W)


def parity_text(parity: dict[str, Any]) -> str:
    """The parity report as the command prints it: the verdict and rule, then one line per check image."""
    lines = [f"ONNX parity {'PASSED' if parity['passed'] else 'FAILED'} ({parity['rule']}):"]
    lines += [
        f"  {row['name']} {row['size']}: argmax agreement {100 * row['agreement']:.4f}%, max |logit diff| "
        f"{row['max_abs_diff']:.2e} (tolerance {row['tolerance']:.2e})"
        for row in parity["images"]
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, the model it holds, its parity figures and how long it took."""

    out_dir: Path
    parity: dict[str, Any]  # check_parity's report, as card.json holds it
    seconds: float
    model: str = ""


def default_check_images() -> list[tuple[str, np.ndarray]]:
    """A synthetic street scene as four inputs: a multiple of 32, an odd size, a portrait cut, the smallest side."""
    from cityseg.synthetic.dataset import FrameSpec, city_names, write_frame

    with tempfile.TemporaryDirectory(prefix="cityseg-export-check-") as folder:
        spec = FrameSpec("val", city_names("val", 1)[0], 0, CHECK_FRAME, (0, 1, 0, 0))
        write_frame(Path(folder), spec)
        scene = read_user_image(spec.image_path(Path(folder)))  # (H, W, 3)
    odd = scene[23:164, 61:311]  # 250x141
    return [
        ("street", scene),
        ("crop", odd),
        ("portrait", np.ascontiguousarray(odd.transpose(1, 0, 2))),
        ("smallest", np.ascontiguousarray(scene[100 : 100 + MIN_SIDE, 40:140])),
    ]


def check_parity(folder: Path, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Run the exported folder's ONNX graph and its safetensors weights in torch on `images` and compare: passed
    when every image passes PARITY_RULE, and per image its name, WxH, agreement and differences."""
    import onnxruntime

    network = load_weights(Path(folder) / WEIGHTS_FILE)  # what the folder ships, not the checkpoint in memory
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(Path(folder) / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    rows = []
    for name, image in images:
        height, width = image.shape[:2]
        if min(height, width) < MIN_SIDE:
            raise UserError(f"check image {name} is {width}x{height}; the graph takes sides of {MIN_SIDE} px or more.")
        pixels = torch.from_numpy(np.ascontiguousarray(image))[None]  # (1, H, W, 3) uint8
        with torch.inference_mode():
            expected = forward_padded(network, normalize(pixels.permute(0, 3, 1, 2))).numpy()  # (1, C, H, W)
        actual = session.run([ONNX_OUTPUT], {ONNX_INPUT: pixels.numpy()})[0]
        agreement = float(np.mean(actual.argmax(1) == expected.argmax(1)))
        difference, tolerance = float(np.abs(actual - expected).max()), LOGIT_RTOL * float(np.abs(expected).max())
        row = {"name": name, "size": f"{width}x{height}", "agreement": agreement}
        rows.append(row | {"max_abs_diff": difference, "tolerance": tolerance})
    passed = all(row["agreement"] >= MIN_AGREEMENT and row["max_abs_diff"] <= row["tolerance"] for row in rows)
    return {"passed": passed, "rule": PARITY_RULE, "runtime": PARITY_RUNTIME, "images": rows}


def export_onnx(network: nn.Module, path: Path) -> int:
    """Write the graph of `DeployedNetwork(network)` with dynamic batch, height and width; returns its opset."""
    import onnx

    deployed = DeployedNetwork(network).eval()
    # An example whose sides are not multiples of 32, so the padding is traced as the general case.
    example = torch.zeros((2, 75, 133, 3), dtype=torch.uint8)
    sides = {1: torch.export.Dim("height", min=TRACE_MIN_SIDE), 2: torch.export.Dim("width", min=TRACE_MIN_SIDE)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress chatter
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deployed,
            (example,),
            str(path),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=1024), **sides}},
            external_data=False,
            verbose=False,
        )
    graph = onnx.load(str(path), load_external_data=False)
    reflect = [n for n in graph.graph.node if n.op_type == "Pad" and any(a.s == b"reflect" for a in n.attribute)]
    if len(reflect) == 1:  # onnxruntime names the failing node: a too-small input's error then says the minimum
        reflect[0].name = f"image_height_and_width_must_be_at_least_{MIN_SIDE}_px"
        onnx.save(graph, str(path))
    return max(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def _check_out(out_dir: Path, overwrite: bool) -> None:
    """OUT may be missing, empty, or (with overwrite) an earlier export; anything else is left alone."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a folder (it is created).")
    if not any(out_dir.iterdir()):
        return
    try:
        read_card(out_dir)
    except UserError:
        raise UserError(
            f"{out_dir} already holds files that `cityseg export` did not write; they are left alone. Choose "
            "another --out folder."
        ) from None
    if not overwrite:
        raise UserError(
            f"{out_dir} holds an earlier export; pass --overwrite to replace its files (others in it are kept), or "
            "choose another --out."
        )


def _install(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Put the finished files in place: a new OUT is renamed in whole, in an existing one the export's files are
    replaced, card.json last (a kill in between leaves hashes that `cityseg predict` refuses)."""
    _check_out(out_dir, overwrite)  # again: something may have appeared during the export
    umask = os.umask(0)
    os.umask(umask)
    names = (WEIGHTS_FILE, ONNX_FILE, CARD_MD, CARD_JSON)  # the files an export writes
    for name in names:  # mkdtemp and some writers make private files; an export is ordinary files
        (staging / name).chmod(0o666 & ~umask)
    if not out_dir.exists():
        staging.chmod(0o777 & ~umask)
        staging.rename(out_dir)
        return
    for name in names:
        os.replace(staging / name, out_dir / name)


def export_model(
    checkpoint: Path,
    out_dir: Path,
    eval_json: Path | None = None,
    check_images: list[tuple[str, np.ndarray]] | None = None,
    overwrite: bool = False,
    log=print,
) -> ExportResult:
    """Write the export folder for `checkpoint` (see the module docstring); `log` gets one line per step."""
    needed = ("onnx", "onnxscript", "onnxruntime", "safetensors")
    missing = [name for name in needed if not importlib.util.find_spec(name)]
    if missing:
        raise UserError(
            f"`cityseg export` needs the package(s) {', '.join(missing)}; install the requirements "
            "(`pip install onnx onnxscript onnxruntime safetensors`, all in requirements.txt)."
        )
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    start = time.perf_counter()
    _check_out(out_dir, overwrite)
    evaluation = read_evaluation(Path(eval_json)) if eval_json is not None else None  # fail before the slow part
    network, state = load_model(checkpoint, torch.device("cpu"))
    title = model_title_of(state.get("config"))
    if (refusal := onnx_refusal(state.get("config"))) is not None:
        raise UserError(f"{checkpoint} cannot be exported to ONNX: {refusal}. `cityseg predict CHECKPOINT` works.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staging(out_dir, log) as staging:
        from safetensors.torch import save_file

        log(f"exporting {title} (epoch {state.get('epoch')} of {checkpoint})")
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata=weights_metadata(network))
        log(f"weights: {WEIGHTS_FILE} ({(staging / WEIGHTS_FILE).stat().st_size / 2**20:.1f} MiB)")
        log("ONNX: tracing the graph with torch.onnx.export(dynamo=True) (about a minute on a laptop CPU) ...")
        try:
            opset = export_onnx(network, staging / ONNX_FILE)
        except Exception as exc:  # noqa: BLE001 - torch.export and onnxscript fail in many ways
            raise UserError(
                f"torch.onnx.export failed on {title} ({describe_error(exc)}), although this architecture is not "
                "among those known to fail (cityseg.training.model.ONNX_REFUSALS); nothing was written. `cityseg "
                "predict CHECKPOINT` works; report this with --debug's traceback."
            ) from exc
        log(f"ONNX: {ONNX_FILE} (opset {opset}); checking it against torch with onnxruntime ...")
        parity = check_parity(staging, check_images if check_images is not None else default_check_images())
        log(parity_text(parity))
        if not parity["passed"]:
            raise UserError(
                f"the ONNX graph of {title} ({checkpoint}) does not reproduce the torch model within the stated "
                "tolerance (figures above), so no export was written. Report this with the figures; `cityseg "
                "predict CHECKPOINT` still works."
            )
        files = {kind: {"file": name, "sha256": file_sha256(staging / name)} for kind, name in EXPORT_FILES}
        files["onnx"].update(opset=opset, min_side=MIN_SIDE)
        card = build_card(checkpoint, state, network, files, parity, evaluation)
        if evaluation is not None and card["results"]["evaluation"]["same_checkpoint"] is False:
            log(
                f"warning: the predictions scored in {evaluation['file']} were made with another checkpoint (their "
                "manifest says so); the card says so too. Predict and evaluate with this checkpoint for its own numbers."
            )
        atomic_write_text(staging / CARD_JSON, card_json_text(card))
        atomic_write_text(staging / CARD_MD, card_markdown(card))
        _install(staging, out_dir, overwrite)
    return ExportResult(out_dir=out_dir, parity=parity, seconds=time.perf_counter() - start, model=title)


def _locked(folder: Path) -> int | None:
    """A descriptor holding an exclusive flock on `folder`, or None when a live process holds one."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _staging(out_dir: Path, log) -> Iterator[Path]:
    """A new folder beside OUT to build the export in, flock-ed while its export runs; the kernel drops a killed
    process's lock, so a staging folder of OUT that nobody locks is a killed export's: removed."""
    for folder in out_dir.parent.glob(glob.escape(f".{out_dir.name}.export-") + "*"):
        if (fd := _locked(folder)) is not None:
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
            log(f"removed {folder}, left by an export of {out_dir} that was killed")
    new = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    fd = _locked(new)  # before its name says "staging folder", which others may remove when it is not locked
    staging = new.rename(new.with_name(new.name.replace(".new-", ".export-", 1)))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(fd)
