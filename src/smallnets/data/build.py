"""build_data: a DataConfig -> train/val loaders, the split record and the preprocessing that predict reuses."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from smallnets._checks import check_bool, check_int, suggest
from smallnets._norm import IMAGENET_MEAN, IMAGENET_STD
from smallnets.data import cache as cache_mod
from smallnets.data import cifar as cifar_mod
from smallnets.data.config import TENSOR_MAX_SIDE, DataConfig
from smallnets.data.file_path import ArrayImages, FileEvalLoader, FileImages, FileTrainLoader
from smallnets.data.images import EVAL_CROP_FRACTION, INTERPOLATION, EvalTransform
from smallnets.data.skips import SkipLog
from smallnets.data.sources import ArchiveSource, Catalog, FolderSource, is_archive, summarize_sizes
from smallnets.data.split import CIFAR_TEST, GIVEN, HOLDOUT, check_split, make_split, split_record
from smallnets.data.tensor_path import TensorEvalLoader, TensorTrainLoader
from smallnets.progress import Progress

_HUGE_CACHE = 8 << 30  # bytes; a bigger tensor cache gets a warning (pipeline="loader" is meant for it)


@dataclass
class DataBundle:
    """What a trainer needs: loaders, classes, the split record and the eval preprocessing."""

    classes: list[str]
    train: TensorTrainLoader | FileTrainLoader
    val: TensorEvalLoader | FileEvalLoader
    num_train: int  # training images, all ranks
    num_val: int  # validation images, all ranks
    split: dict  # JSON-able record of how train/val were made (val file list: ``val_files()``)
    preprocessing: dict  # JSON-able; ``make_eval_transform(preprocessing)`` reproduces validation inputs
    pipeline: str  # "tensor" | "loader"
    _val_files: list[str] = field(repr=False, default_factory=list)
    _skiplog: SkipLog = field(repr=False, default_factory=SkipLog)
    _reader: FolderSource | ArchiveSource | None = field(repr=False, default=None)  # where the val files' bytes are
    _progress: bool = field(repr=False, default=False)
    _digests: list[str] | None = field(repr=False, default=None)

    @property
    def skipped(self) -> dict:
        """Files left out so far: {"total", "by_reason", "examples"} (the loader path adds decode failures as it meets them)."""
        return self._skiplog.as_dict()

    def val_files(self) -> list[str]:
        """Validation sample names in validation order (paths relative to the source, or CIFAR "<batch>/<index>")."""
        return list(self._val_files)

    def val_file_digests(self) -> list[str] | None:
        """sha256 of each validation file's bytes as read now, in ``val_files()`` order (computed once); None for
        CIFAR, whose source checksum covers every sample."""
        if self._reader is None:
            return None
        if self._digests is None:
            got: dict[str, str] = {}
            with Progress("hashing validation files", len(self._val_files), unit="files", enabled=self._progress) as bar:
                for name, data in self._reader.read(self._val_files):
                    got[name] = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else f"unreadable: {data}"
                    bar.update()
            self._digests = [got.get(n, "missing") for n in self._val_files]
        return list(self._digests)

    def split_json(self) -> dict:
        """The split record with the full validation file list, for ``split.json`` (with each file's sha256, so
        that evaluation can tell a file whose content changed under the same name)."""
        digests = self.val_file_digests()
        return {**self.split, "val_files": self.val_files(), **({"val_files_content_sha256": digests} if digests is not None else {})}


@dataclass
class _Prepared:
    catalog: Catalog
    source: dict
    pipeline: str
    cache: cache_mod.TensorCache | None = None
    images: FileImages | ArrayImages | None = None  # loader path: indexed like the catalog
    reader: FolderSource | ArchiveSource | None = None  # reads the catalog's files by name (None: CIFAR)


def _decide(cfg: DataConfig, max_side: int) -> str:
    if cfg.pipeline != "auto":
        return cfg.pipeline
    side = cfg.image_size if cfg.image_size is not None else max_side
    return "tensor" if side <= TENSOR_MAX_SIDE else "loader"


def _cache_settings(cfg: DataConfig) -> dict:
    return {"image_size": cfg.image_size, "limit_per_class": cfg.limit_per_class}


def _warn_size(n: int, size: int) -> None:
    if n * 3 * size * size > _HUGE_CACHE:
        warnings.warn(f"smallnets.data: the tensor cache will take {n * 3 * size * size / 2**30:.1f} GiB ({n} images at {size}px); "
                      f"pipeline='loader' decodes on the fly instead", stacklevel=4)


def _prepare_files(cfg: DataConfig, src: FolderSource | ArchiveSource, root: Path, workers: int, progress: bool) -> _Prepared:
    where = os.fspath(cfg.path)
    catalog = None
    sizes = None
    if cfg.pipeline != "loader":
        if isinstance(src, FolderSource):
            catalog = src.catalog(cfg.limit_per_class, progress)
        sizes = summarize_sizes(src.sample_sizes(catalog), where)
    pipeline = _decide(cfg, sizes["max_side"]) if sizes else "loader"
    if pipeline == "tensor":
        digest = src.content_sha256(catalog, progress)
        source = {**src.describe(), "sha256": digest}
        path = root / "tensors" / f"{cache_mod.cache_key('sha256:' + digest, _cache_settings(cfg))}.safetensors"
        cached = cache_mod.load(path)
        if cached is None:
            if catalog is None:
                catalog = src.catalog(cfg.limit_per_class, progress)
            size = cfg.image_size or sizes["native"]
            _warn_size(len(catalog), size)
            images, rows, failed = cache_mod.decode_source(src, catalog, size, workers=workers, progress=progress)
            cached = cache_mod.TensorCache(images, rows, catalog, size, failed, source)
            cache_mod.save(path, cached)
        # A folder was listed afresh (same names in the same order, or the hash would differ): its
        # listing-time skips are current; an archive's come from the cache.
        catalog = catalog if catalog is not None else cached.catalog
        return _Prepared(catalog, {**source, "layout": catalog.layout}, "tensor", cache=cached, reader=src)
    local = src.local_root(root, progress)
    lister = src if isinstance(src, FolderSource) else FolderSource(local)  # an archive: its extracted files
    if catalog is None or local != getattr(src, "root", None):
        catalog = lister.catalog(cfg.limit_per_class, progress)
    source = {**src.describe(), "layout": catalog.layout}
    return _Prepared(catalog, source, "loader", images=FileImages(local, catalog.names), reader=lister)


def _cifar_catalog(data: cifar_mod.CifarData, limit: int | None) -> tuple[Catalog, list[int]]:
    """Catalog of the CIFAR samples kept (first ``limit`` of each class and part) and their rows in ``data``."""
    keep, seen = [], {}
    for i, (label, part) in enumerate(zip(data.labels.tolist(), data.parts)):
        k = (part, label)
        if limit is None or seen.get(k, 0) < limit:
            seen[k] = seen.get(k, 0) + 1
            keep.append(i)
    catalog = Catalog(
        classes=data.classes,
        names=tuple(data.names[i] for i in keep),
        labels=tuple(int(data.labels[i]) for i in keep),
        parts=tuple(data.parts[i] for i in keep),
        layout="official python batches",
    )
    return catalog, keep


def _prepare_cifar(cfg: DataConfig, name: str, root: Path, progress: bool) -> _Prepared:
    spec = cifar_mod.CIFAR[name]
    data_root = Path(cfg.root).expanduser() if cfg.root is not None else root / "datasets"
    kind, path, key = cifar_mod.locate(spec, data_root, download_ok=cfg.download, progress=progress)
    source = {"kind": name, "path": str(path), "checksum": key}
    size = cfg.image_size or 32
    pipeline = _decide(cfg, 32)
    if pipeline == "tensor":
        cpath = root / "tensors" / f"{cache_mod.cache_key(key, _cache_settings(cfg))}.safetensors"
        cached = cache_mod.load(cpath)
        if cached is None:
            data = cifar_mod.read(spec, kind, path)
            catalog, keep = _cifar_catalog(data, cfg.limit_per_class)
            images = cache_mod.resize_array(data.images[keep], size, progress)
            rows = torch.arange(len(keep))
            cached = cache_mod.TensorCache(images, rows, catalog, size, [], source)
            cache_mod.save(cpath, cached)
        return _Prepared(cached.catalog, source, "tensor", cache=cached)
    data = cifar_mod.read(spec, kind, path)
    catalog, keep = _cifar_catalog(data, cfg.limit_per_class)
    return _Prepared(catalog, source, "loader", images=ArrayImages(data.images[keep], catalog.names))


def channel_stats(moments: torch.Tensor, pixels_per_image: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over the images whose ``pixel_moments`` are given (population std)."""
    total = moments.sum(0).to(torch.float64)  # [2, 3]: sums and sums of squares
    n = len(moments) * pixels_per_image
    mean = total[0] / n
    var = (total[1] / n - mean**2).clamp_min(0)
    std = [max(math.sqrt(v) / 255, 1 / 255) for v in var.tolist()]  # constant images: avoid dividing by 0
    return [round(m / 255, 6) for m in mean.tolist()], [round(s, 6) for s in std]


def _resolve(cfg: DataConfig):
    p = os.fspath(cfg.path)
    if p in cifar_mod.CIFAR:
        return p
    path = Path(p).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"path {p!r} does not exist; expected a folder, a .tar/.tar.gz/.tgz archive, 'cifar10' or 'cifar100'"
            f"{suggest(p, cifar_mod.CIFAR)}"
        )
    if path.is_dir():
        return FolderSource(path.resolve(), follow_links=cfg.follow_links)
    if is_archive(path):
        return ArchiveSource(path.resolve())
    if path.name.lower().endswith(".zip"):
        raise ValueError(_zip_message(path, p))
    raise ValueError(f"path must be a folder, a .tar/.tar.gz/.tgz archive, 'cifar10' or 'cifar100'; got the file {p!r}")


def _zip_message(path: Path, p: str) -> str:
    """Why a .zip is refused (smallnets reads folders and tar archives), saying so when the file is damaged as well."""
    rule = "path must be a folder, a .tar/.tar.gz/.tgz archive, 'cifar10' or 'cifar100'"
    fix = (f"extract it (python -m zipfile -e {p} DIR) and pass the folder, or pack the class folders as .tar/.tar.gz/.tgz "
           f"(tar czf set.tar.gz -C DIR .)")  # fmt: skip
    try:
        zipfile.ZipFile(path).close()  # reads the central directory at the end: a download cut short has none
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # ValueError: zipfile on some malformed headers
        return f"{rule}; got the .zip file {p!r}, which is also truncated or corrupt ({type(e).__name__}: {e}). .zip archives are not read: {fix}"
    return f"{rule}; got the .zip file {p!r}: .zip archives are not read; {fix}"


def build_data(cfg: DataConfig, *, seed: int = 0, device="cpu", rank: int = 0, world_size: int = 1, progress: bool = True) -> DataBundle:
    """Read ``cfg.path``, split it, and return this rank's train/val loaders (see DataBundle).

    Training shards: every epoch's permutation drops its last ``num_train % world_size`` entries
    (different ones each epoch), so ranks get disjoint shards of equal size and equal step counts.
    Validation shards are strided without padding: disjoint, covering the val set once.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"cfg must be a DataConfig, got {type(cfg).__name__}")
    check_int("seed", seed, minimum=0)
    check_int("world_size", world_size)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    check_bool("progress", progress)
    device = torch.device(device)
    root = cache_mod.default_cache_root(cfg.cache_dir)
    workers = cfg.workers if cfg.workers is not None else min(4, os.cpu_count() or 1)
    where = os.fspath(cfg.path)

    src = _resolve(cfg)
    is_cifar = isinstance(src, str)
    prep = _prepare_cifar(cfg, src, root, progress) if is_cifar else _prepare_files(cfg, src, root, workers, progress)
    catalog = prep.catalog

    if "val" in catalog.parts:
        val_part, method = "val", GIVEN
    elif is_cifar and cfg.cifar_val == "test":
        val_part, method = "test", CIFAR_TEST
    else:
        val_part, method = None, HOLDOUT
    skiplog = SkipLog()
    skiplog.extend(catalog.skipped)
    usable = None
    if prep.cache is not None:  # the tensor path knows which files failed to decode: they take no part in the split
        skiplog.extend(prep.cache.decode_skipped)
        usable = (prep.cache.rows >= 0).tolist()
    skiplog.warn(f"in {where}")
    train_ids, val_ids = make_split(catalog, val_part=val_part, fraction=cfg.val_fraction, seed=cfg.split_seed, usable=usable)
    check_split(catalog, train_ids, val_ids, where)
    holdout = method == HOLDOUT
    record = split_record(catalog, train_ids, val_ids, method=method, seed=cfg.split_seed if holdout else None,
                          fraction=cfg.val_fraction if holdout else None, source=prep.source)
    labels = torch.tensor(catalog.labels, dtype=torch.int64)
    common = {"channels_last": cfg.channels_last, "device": device}
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    if len(train_ids) < world_size:
        raise ValueError(f"world_size={world_size} exceeds the {len(train_ids)} training images: every rank needs at least one")

    given = None if cfg.mean is None else (list(cfg.mean), list(cfg.std))  # normalisation asked for (a fine-tune's)
    if prep.pipeline == "tensor":
        c = prep.cache
        tr_img = c.images.index_select(0, c.rows[train_ids])
        va_img = c.images.index_select(0, c.rows[val_ids])
        mean, std = channel_stats(c.moments[c.rows[train_ids]], c.size * c.size) if given is None else given
        preprocessing = {"pipeline": "tensor", "image_size": c.size, "resize": c.size, "crop": c.size,
                         "interpolation": INTERPOLATION, "mean": mean, "std": std}
        train = TensorTrainLoader(tr_img.to(device), labels[train_ids].to(device), mean=mean, std=std, batch_size=cfg.batch_size,
                                  seed=seed, rank=rank, world_size=world_size, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                  cutout=cfg.cutout, drop_last=cfg.drop_last, **common)
        val = TensorEvalLoader(va_img.to(device), labels[val_ids].to(device), mean=mean, std=std, batch_size=eval_bs,
                               rank=rank, world_size=world_size, **common)
    else:
        size = cfg.image_size or 224
        mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if given is None else given
        preprocessing = {"pipeline": "loader", "image_size": size, "resize": round(size / EVAL_CROP_FRACTION), "crop": size,
                         "interpolation": INTERPOLATION, "mean": mean, "std": std}
        transform = EvalTransform(resize=preprocessing["resize"], crop=size, mean=mean, std=std)
        sub = lambda ids: _subset(prep.images, ids)  # noqa: E731
        loader_kw = {"workers": workers, "mean": mean, "std": std, "skiplog": skiplog, **common}
        train = FileTrainLoader(sub(train_ids), [catalog.labels[i] for i in train_ids], image_size=size, flip=cfg.flip,
                                cutout=cfg.cutout, batch_size=cfg.batch_size, seed=seed, rank=rank, world_size=world_size,
                                drop_last=cfg.drop_last, **loader_kw)
        val = FileEvalLoader(sub(val_ids), [catalog.labels[i] for i in val_ids], transform=transform, batch_size=eval_bs,
                             rank=rank, world_size=world_size, **loader_kw)
    if len(train) == 0:
        raise ValueError(f"batch_size={cfg.batch_size} with drop_last=True leaves no training batch ({train.num_samples} images per rank)")
    return DataBundle(
        classes=list(catalog.classes),
        train=train,
        val=val,
        num_train=len(train_ids),
        num_val=len(val_ids),
        split=record,
        preprocessing=preprocessing,
        pipeline=prep.pipeline,
        _val_files=[catalog.names[i] for i in val_ids],
        _skiplog=skiplog,
        _reader=prep.reader,
        _progress=progress,
    )


def _subset(images: FileImages | ArrayImages, ids: list[int]) -> FileImages | ArrayImages:
    if isinstance(images, FileImages):
        return FileImages(images.root, [images.names[i] for i in ids])
    return ArrayImages(images.images[ids], [images.names[i] for i in ids])
