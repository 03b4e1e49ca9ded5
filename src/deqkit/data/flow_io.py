"""Optical-flow files and folder layouts: the Middlebury ``.flo`` format, KITTI's 16-bit flow
PNGs, and the FlyingChairs, MPI-Sintel and KITTI-2015 training folders read from a local path.

Flow is a float32 array (H, W, 2) of (u, v) in pixels, frame 1 -> frame 2; pixels without ground
truth are NaN. Images are uint8 (H, W, 3).

>>> import tempfile, numpy as np
>>> flow = np.zeros((2, 3, 2), np.float32); flow[..., 0] = 1.5
>>> with tempfile.TemporaryDirectory() as d:
...     write_flo(f"{d}/a.flo", flow)
...     bool((read_flo(f"{d}/a.flo") == flow).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FLO_MAGIC",
    "FlowPair",
    "chairs_pairs",
    "kitti_pairs",
    "read_flo",
    "read_image",
    "read_kitti_flow",
    "read_pfm",
    "sintel_pairs",
    "things_pairs",
    "write_flo",
    "write_kitti_flow",
]

#: The float32 tag opening every ``.flo`` file ("PIEH" in ASCII).
FLO_MAGIC = 202021.25
# Middlebury writes 1e9 or more for "unknown" flow.
_UNKNOWN = 1e9


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write (H, W, 2) flow as ``.flo``: magic, int32 width, int32 height, float32 (u, v) rows.

    >>> write_flo("/dev/null", np.zeros((2, 2)))
    Traceback (most recent call last):
    ...
    ValueError: flow must have shape (H, W, 2), got (2, 2)
    """
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    h, w = flow.shape[:2]
    with open(path, "wb") as f:
        np.array([FLO_MAGIC], "<f4").tofile(f)
        np.array([w, h], "<i4").tofile(f)
        np.nan_to_num(flow.astype("<f4"), nan=2 * _UNKNOWN).tofile(f)


def read_flo(path: str | Path) -> np.ndarray:
    """Read a ``.flo`` file as float32 (H, W, 2); "unknown" values (>= 1e9) become NaN.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".flo") as f:
    ...     _ = f.write(b"not a flow file")
    ...     f.flush()
    ...     read_flo(f.name)
    Traceback (most recent call last):
    ...
    ValueError: ... is not a .flo file (bad magic number)
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise ValueError(f"{path} is not a .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise ValueError(f"{path}: header says {w}x{h} but the file has {len(data) - 12} bytes")
    flow = np.frombuffer(data[12:], "<f4").reshape(h, w, 2).astype(np.float32)
    flow[np.abs(flow) >= _UNKNOWN] = np.nan
    return flow


def write_kitti_flow(path: str | Path, flow: np.ndarray) -> None:
    """Write KITTI's flow PNG: 16-bit RGB, u = (R - 2^15) / 64, v likewise from G, B = valid.

    NaN pixels are written invalid.

    >>> import tempfile
    >>> flow = np.array([[[1.25, -2.0], [np.nan, np.nan]]], np.float32)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_kitti_flow(f"{d}/f.png", flow)
    ...     read_kitti_flow(f"{d}/f.png").tolist()
    [[[1.25, -2.0], [nan, nan]]]
    """
    import png

    flow = np.asarray(flow, np.float64)
    valid = np.isfinite(flow).all(axis=2)
    encoded = np.clip(np.round(np.nan_to_num(flow) * 64.0 + 2**15), 0, 2**16 - 1)
    rgb = np.concatenate([encoded, valid[..., None]], axis=2).astype(np.uint16)
    h, w = valid.shape
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16).write(f, rgb.reshape(h, w * 3))


def read_kitti_flow(path: str | Path) -> np.ndarray:
    """Read a KITTI flow PNG (see :func:`write_kitti_flow`) as float32 (H, W, 2), NaN = invalid."""
    import png

    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    if info["bitdepth"] != 16 or info["planes"] < 3:
        raise ValueError(f"{path}: a KITTI flow PNG is 16-bit RGB, got {info['bitdepth']}-bit")
    a = np.vstack([np.asarray(r, np.float64) for r in rows]).reshape(h, w, info["planes"])
    flow = ((a[..., :2] - 2**15) / 64.0).astype(np.float32)
    flow[a[..., 2] == 0] = np.nan
    return flow


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file (FlyingThings3D's flow): "PF" (3 channels) or "Pf" (1), width height,
    scale (negative = little-endian), float32 rows from the bottom up. Returns (H, W, C)."""
    data = Path(path).read_bytes()
    parts = data.split(b"\n", 3)
    if len(parts) < 4 or parts[0].strip() not in (b"PF", b"Pf"):
        raise ValueError(f"{path} is not a PFM file")
    channels = 3 if parts[0].strip() == b"PF" else 1
    w, h = (int(v) for v in parts[1].split())
    endian = "<" if float(parts[2]) < 0 else ">"
    body = np.frombuffer(parts[3][: 4 * w * h * channels], endian + "f4")
    if body.size != w * h * channels:
        raise ValueError(f"{path}: header says {w}x{h}x{channels}, the data is shorter")
    return np.flipud(body.reshape(h, w, channels)).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) (grey is repeated, alpha dropped)."""
    from skimage import io

    image = io.imread(str(path))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {image.dtype}")
    return image[..., :3]


@dataclass(frozen=True)
class FlowPair:
    """Paths of one training pair and its ground truth, with the reader of the flow file."""

    image1: Path
    image2: Path
    flow: Path
    kind: str  # "flo", "kitti" or "pfm"

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image1, image2, flow)``: uint8 (H, W, 3) twice and float32 (H, W, 2), NaN = none."""
        readers = {"flo": read_flo, "kitti": read_kitti_flow, "pfm": lambda p: read_pfm(p)[..., :2]}
        flow = readers[self.kind](self.flow)
        return read_image(self.image1), read_image(self.image2), flow


def _need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{layout} folder {path} not found")
    return path


def chairs_pairs(root: str | Path, split: str = "train") -> list[FlowPair]:
    """FlyingChairs: ``root/data/NNNNN_img1.ppm``, ``_img2.ppm``, ``_flow.flo``; the optional
    ``root/FlyingChairs_train_val.txt`` (one 1 = train or 2 = validation per pair) splits them.

    >>> chairs_pairs("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: FlyingChairs folder /nonexistent/data not found
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"FlyingChairs split must be 'train', 'val' or 'all', got {split!r}")
    data = _need_dir(Path(root) / "data", "FlyingChairs")
    firsts = sorted(data.glob("*_img1.ppm"))
    pairs = [
        FlowPair(p, p.with_name(p.name.replace("_img1", "_img2")),
                 p.with_name(p.name.replace("_img1.ppm", "_flow.flo")), "flo")
        for p in firsts
    ]  # fmt: skip
    split_file = Path(root) / "FlyingChairs_train_val.txt"
    if split == "all" or not split_file.exists():
        return pairs
    marks = split_file.read_text().split()
    if len(marks) != len(pairs):
        raise ValueError(f"{split_file} lists {len(marks)} pairs, {data} holds {len(pairs)}")
    keep = "1" if split == "train" else "2"
    return [p for p, m in zip(pairs, marks, strict=True) if m == keep]


def sintel_pairs(root: str | Path, pass_name: str = "clean") -> list[FlowPair]:
    """MPI-Sintel training set: ``root/training/<pass>/<scene>/frame_NNNN.png`` and
    ``root/training/flow/<scene>/frame_NNNN.flo`` (flow from frame N to frame N + 1)."""
    if pass_name not in ("clean", "final"):
        raise ValueError(f"Sintel pass must be 'clean' or 'final', got {pass_name!r}")
    images = _need_dir(Path(root) / "training" / pass_name, "Sintel")
    flows = _need_dir(Path(root) / "training" / "flow", "Sintel")
    pairs = []
    for scene in sorted(p for p in images.iterdir() if p.is_dir()):
        frames = sorted(scene.glob("frame_*.png"))
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            pairs.append(FlowPair(a, b, flows / scene.name / (a.stem + ".flo"), "flo"))
    return pairs


def kitti_pairs(root: str | Path) -> list[FlowPair]:
    """KITTI-2015 training set: ``root/training/image_2/NNNNNN_10.png``, ``_11.png`` and
    ``root/training/flow_occ/NNNNNN_10.png`` (16-bit flow PNGs, sparse)."""
    train = _need_dir(Path(root) / "training", "KITTI-2015")
    images, flows = _need_dir(train / "image_2", "KITTI-2015"), train / "flow_occ"
    return [
        FlowPair(p, p.with_name(p.name.replace("_10.png", "_11.png")), flows / p.name, "kitti")
        for p in sorted(images.glob("*_10.png"))
    ]


def things_pairs(root: str | Path, pass_name: str = "clean") -> list[FlowPair]:
    """FlyingThings3D (training, left views, forward flow):
    ``root/frames_<pass>pass/TRAIN/<A|B|C>/<NNNN>/left/NNNN.png`` and
    ``root/optical_flow/TRAIN/<A|B|C>/<NNNN>/into_future/left/OpticalFlowIntoFuture_NNNN_L.pfm``."""
    if pass_name not in ("clean", "final"):
        raise ValueError(f"FlyingThings3D pass must be 'clean' or 'final', got {pass_name!r}")
    frames = _need_dir(Path(root) / f"frames_{pass_name}pass" / "TRAIN", "FlyingThings3D")
    flows = Path(root) / "optical_flow" / "TRAIN"
    pairs = []
    for seq in sorted(p for p in frames.glob("*/*") if (p / "left").is_dir()):
        images = sorted((seq / "left").glob("*.png"))
        rel = seq.relative_to(frames)
        for a, b in zip(images[:-1], images[1:], strict=True):
            name = f"OpticalFlowIntoFuture_{a.stem}_L.pfm"
            pairs.append(FlowPair(a, b, flows / rel / "into_future" / "left" / name, "pfm"))
    return pairs
