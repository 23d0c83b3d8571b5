"""CIFAR-10 / CIFAR-100 in the official python format (Krizhevsky, 2009), read without trusting pickle.

The official batches are pickles. They are read with ``RestrictedUnpickler``, which can build numpy
arrays and nothing else, after the archive (or each extracted file) matched its published md5.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from smallnets.data.download import ChecksumError, DownloadError, download, file_digest

try:  # numpy >= 2 moved the module; the official files name the old spelling
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


@dataclass(frozen=True)
class CifarSpec:
    name: str
    url: str
    md5: str  # of the .tar.gz, published with it (and used by torchvision)
    archive: str  # file name of the download
    folder: str  # top-level folder inside the archive
    train: tuple[str, ...]  # batch files, in order
    test: str
    meta: str
    label_key: str  # per-image labels inside a batch
    names_key: str  # class names inside the meta file
    file_md5: Mapping[str, str] = field(default_factory=dict)  # of the extracted files (torchvision's table)


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
        test="test_batch",
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and plain Python containers; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: CIFAR batches hold only numpy arrays") from None


def load_batch(data: bytes, name: str) -> dict:
    """One official batch (bytes of the pickle) as a dict with str keys."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"{name}: {e}") from e
    except Exception as e:
        raise ValueError(f"{name}: not a CIFAR python batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


@dataclass(frozen=True)
class CifarData:
    classes: tuple[str, ...]
    images: np.ndarray  # uint8 [N, 3, 32, 32], official order: train batches then the test batch
    labels: np.ndarray  # int64 [N]
    names: tuple[str, ...]  # "<batch file>/<index in batch>"
    parts: tuple[str, ...]  # "train" | "test"


def _text(v) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


def parse(files: Mapping[str, bytes], spec: CifarSpec) -> CifarData:
    """Decode the batch files of ``spec`` (file name -> bytes)."""
    meta = load_batch(files[spec.meta], spec.meta)
    if spec.names_key not in meta:
        raise ValueError(f"{spec.meta}: no {spec.names_key!r} entry")
    classes = tuple(_text(c) for c in meta[spec.names_key])
    images, labels, names, parts = [], [], [], []
    for fname, part in [(f, "train") for f in spec.train] + [(spec.test, "test")]:
        batch = load_batch(files[fname], fname)
        data, lab = batch.get("data"), batch.get(spec.label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{fname}: 'data' must be a uint8 array [N, 3072], got {getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
        lab = np.asarray(lab, dtype=np.int64)
        if lab.shape != (data.shape[0],) or (lab.size and (lab.min() < 0 or lab.max() >= len(classes))):
            raise ValueError(f"{fname}: {spec.label_key!r} must hold {data.shape[0]} labels in [0, {len(classes)})")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
        names += [f"{fname}/{i}" for i in range(data.shape[0])]
        parts += [part] * data.shape[0]
    return CifarData(classes, np.concatenate(images), np.concatenate(labels), tuple(names), tuple(parts))


def _where_to_put(spec: CifarSpec, root: Path) -> str:
    return (
        f"place {spec.archive} (md5 {spec.md5}, from {spec.url}) in {root}, "
        f"or its extracted folder {spec.folder}/ there, and run again"
    )


def locate(spec: CifarSpec, root: Path, *, download_ok: bool, progress: bool, url: str | None = None, md5: str | None = None) -> tuple[str, Path, str]:
    """Find (or fetch) the data under ``root``: ("archive" | "folder", path, content key).

    An archive is checked against its md5 (``md5`` overrides the published one, for mirrors and
    tests); an extracted folder file by file against ``spec.file_md5``.
    """
    url, md5 = url or spec.url, (md5 or spec.md5).lower()
    archive, folder = root / spec.archive, root / spec.folder
    if archive.is_file():
        got = file_digest(archive, "md5")
        if got != md5:
            raise ChecksumError(f"{archive}: md5 is {got}, expected {md5}; delete it (it will be downloaded again) or {_where_to_put(spec, root)}")
        return "archive", archive, f"md5:{md5}"
    if folder.is_dir():
        needed = [*spec.train, spec.test, spec.meta]
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; {_where_to_put(spec, root)}")
        digests = []
        for f in needed:
            got = file_digest(folder / f, "md5")
            if f in spec.file_md5 and got != spec.file_md5[f]:
                raise ChecksumError(f"{folder / f}: md5 is {got}, expected {spec.file_md5[f]}; {_where_to_put(spec, root)}")
            digests.append(got)
        return "folder", folder, "md5:" + ",".join(digests)
    if not download_ok:
        raise FileNotFoundError(f"{spec.name} not found under root {str(root)!r} and download=False; {_where_to_put(spec, root)}")
    try:
        download(url, archive, md5=md5, progress=progress)
    except DownloadError as e:
        raise FileNotFoundError(f"{spec.name} is not under root {str(root)!r} and the download failed ({e}); {_where_to_put(spec, root)}") from e
    return "archive", archive, f"md5:{md5}"


def read(spec: CifarSpec, kind: str, path: Path) -> CifarData:
    needed = {*spec.train, spec.test, spec.meta}
    if kind == "folder":
        return parse({f: (path / f).read_bytes() for f in needed}, spec)
    files = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                parts = [p for p in PurePosixPath(m.name).parts if p != "."]
                if m.isfile() and len(parts) == 2 and parts[0] == spec.folder and parts[1] in needed:
                    files[parts[1]] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable tar archive ({e})") from e
    missing = sorted(needed - set(files))
    if missing:
        raise ValueError(f"{path}: archive lacks {spec.folder}/{', '.join(missing)}")
    return parse(files, spec)
