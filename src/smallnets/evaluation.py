"""Classification metrics over a data loader (loss, top-1 / top-5, per-class accuracy, confusion), and
``evaluate_weights``: saved weights on their run's validation split or on every image of a test set."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from smallnets._precision import AMP_DTYPES
from smallnets.distributed import DistInfo, all_reduce_sum
from smallnets.rundir import PastRun, find_run


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    count: int  # images evaluated
    confusion: torch.Tensor = field(repr=False)  # [true, predicted] counts, int64
    classes: list[str] = field(default_factory=list, repr=False)
    details: dict[str, Any] = field(default_factory=dict, repr=False)  # provenance from evaluate_weights: weights, data, split, notes

    @property
    def support(self) -> dict[str, int]:
        """Images of each true class: the confusion matrix's row sums."""
        names = self.classes or [str(i) for i in range(len(self.confusion))]
        return dict(zip(names, self.confusion.sum(1).tolist()))

    @property
    def per_class(self) -> dict[str, float | None]:
        """Accuracy (percent) of each class: the diagonal over the row sums; None for a class without images."""
        rows = self.confusion.sum(1)
        acc = (self.confusion.diag().double() / rows.clamp_min(1).double() * 100).tolist()
        names = self.classes or [str(i) for i in range(len(acc))]
        return {c: (a if n else None) for c, a, n in zip(names, acc, rows.tolist())}

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "count": self.count,
            "per_class": self.per_class,
            "support": self.support,
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            **self.details,
        }


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    classes: Sequence[str] = (),
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
) -> EvalResult:
    """Evaluate ``model`` (eval mode) on ``batches``; under torchrun, sums over every rank's shard."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                logits = model(x)
            logits = logits.float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
            topk = logits.topk(k, dim=1).indices
            top5 += (topk == y[:, None]).any(1).sum()
            confusion.view(-1).index_add_(0, y * num_classes + topk[:, 0], torch.ones_like(y))
    finally:
        model.train(was_training)
    info = dist_info or DistInfo()
    packed = torch.cat([loss_sum.view(1), top5.double().view(1), confusion.double().view(-1)])
    packed = all_reduce_sum(packed, info)
    confusion = packed[2:].round().long().view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    if count == 0:
        raise ValueError("evaluate needs at least one image, got an empty set of batches")
    return EvalResult(
        loss=float(packed[0]) / count,
        top1=100.0 * float(confusion.diag().sum()) / count,
        top5=100.0 * float(packed[1]) / count,
        count=count,
        confusion=confusion,
        classes=list(classes),
    )


# ---------------------------------------------------------------------------------------------
# Saved weights on a data set
# ---------------------------------------------------------------------------------------------

SPLITS = ("val", "all")


def _is_cifar(data: str) -> bool:
    from smallnets.data.cifar import CIFAR

    return data in CIFAR


def _same_data(run: PastRun, data: str) -> bool:
    """Whether ``data`` names the source the run was trained on (the same folder, archive or CIFAR name)."""
    recorded = os.fspath(run.config.data.path)
    if _is_cifar(recorded) or _is_cifar(data):
        return data == recorded
    here = Path(data).expanduser().resolve()
    source = ((run.split or {}).get("source") or {}).get("path")
    # split.json holds the resolved path; config.json the path as typed (relative to where training ran)
    return here == Path(source) if source else here == Path(recorded).expanduser().resolve()


def _recorded_val_files(split: dict | None) -> list[str] | str | None:
    """The run's validation files from split.json: the list, else only its sha256 (older runs), else None."""
    split = split or {}
    return split.get("val_files") if isinstance(split.get("val_files"), list) else split.get("val_files_sha256")


def _without_top_folder(names: Sequence[str]) -> list[str]:
    """Names with one folder shared by all of them removed (an archive's top-level folder)."""
    firsts = {n.split("/", 1)[0] for n in names}
    if len(firsts) == 1 and all(n.count("/") >= 2 for n in names):
        return [n.split("/", 1)[1] for n in names]
    return list(names)


def _same_files(recorded: list[str] | str, bundle) -> bool:
    if isinstance(recorded, str):
        return recorded == bundle.split.get("val_files_sha256")
    return _without_top_folder(recorded) == _without_top_folder(bundle.val_files())


def _content_check(split: dict, bundle) -> tuple[bool | None, list[str]]:
    """Whether the validation files hold the bytes the run's split.json recorded, and the names of those
    that do not; (None, []) when the record has no file contents (split.json from before they were kept)."""
    recorded = split.get("val_files_content_sha256")
    if isinstance(recorded, list):
        current = bundle.val_file_digests()
        if current is not None and len(current) == len(recorded):
            changed = [n for n, was, now in zip(bundle.val_files(), recorded, current) if was != now]
            return not changed, changed
    ran, now = (split.get("source") or {}).get("checksum"), (bundle.split.get("source") or {}).get("checksum")
    if ran is not None and now is not None:  # CIFAR: one checksum covers every sample
        return ran == now, []
    return None, []


def _same_preprocessing(a: dict | None, b: dict | None) -> bool:
    if not a or not b:
        return False
    for key in ("resize", "crop"):
        if a.get(key) != b.get(key):
            return False
    return all(len(a[k]) == len(b[k]) and all(abs(float(x) - float(y)) <= 1e-9 for x, y in zip(a[k], b[k])) for k in ("mean", "std"))


def class_mapping(data_classes: Sequence[str], model_classes: Sequence[str], where: str) -> torch.Tensor | None:
    """Model index of each data class, or None when the names are the same in the same order.

    The data may hold a subset of the model's classes (in any order); a class the model does not
    know is an error that lists the differences.
    """
    data_classes, model_classes = list(data_classes), list(model_classes)
    if data_classes == model_classes:
        return None
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        show = lambda names: ", ".join(map(repr, names[:10])) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")  # noqa: E731
        raise ValueError(
            f"data classes must be the model's classes or a subset of them (matched by name); {where!r} has "
            f"{len(unknown)} class(es) the model does not know: {show(unknown)}. "
            f"Model classes ({len(model_classes)}): {show(model_classes)}; data classes ({len(data_classes)}): {show(data_classes)}"
        )
    index = {c: i for i, c in enumerate(model_classes)}
    return torch.tensor([index[c] for c in data_classes], dtype=torch.int64)


def _relabel(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], mapping: torch.Tensor | None):
    if mapping is None:
        yield from batches
        return
    for x, y in batches:
        yield x, mapping.to(y.device).index_select(0, y)


def _file_batches(source: Path, kind: str, names: Sequence[str], labels: Sequence[int], preprocessing: dict, *,
                  batch_size: int, workers: int | None, device: torch.device, channels_last: bool,
                  skiplog) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Normalised batches of files of a folder or archive, with the model's eval transform."""
    from smallnets.data import make_eval_transform
    from smallnets.data import skips
    from smallnets.data.image_sets import archive_batches, file_batches, normalized

    transform = make_eval_transform(preprocessing)
    if kind == "archive":
        raw = archive_batches(source, names, transform, batch_size)
    else:
        raw = file_batches([source / n for n in names], transform, batch_size, workers)
    y_all = torch.as_tensor(list(labels), dtype=torch.int64)
    for x, ok, failed in normalized(raw, transform, device):
        for i, detail in failed:
            skiplog.add(names[i], skips.UNREADABLE, detail)
        if x is not None:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y_all[ok].to(device)


def evaluate_weights(
    weights: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate saved weights (a run directory: best.safetensors, else last; or a .safetensors file
    with its JSON sidecar) on ``data``; ``result.details`` says what was evaluated and how.

    ``split="val"``: the run's validation split, the data built exactly as the run built it (its
    DataConfig with ``path=data``: same split seed and fraction, image size, pipeline); needs the
    run's config.json (a run directory, or weights inside one); ``details["split_matches_run"]`` says
    whether those are the files of the run's split.json, by name and by content (each file's sha256,
    recorded since split.json has kept it; ``details["changed_val_files"]`` names the files whose bytes
    changed). ``split="all"``: every image of a
    class-folder tree or archive (``ROOT/<class>/...``, ``ROOT/test/<class>/...`` or
    ``ROOT/val/<class>/...``) with the model's eval preprocessing from its sidecar. Default: "val"
    for a run directory on its own data (``data=None`` means the run's data), else "all" (other data,
    or a weights file given on its own).

    The data's classes must be the model's (same names, same order) or a subset of them, matched by
    name. ``precision`` (fp32 | bf16 | fp16) defaults to the run's and memory format follows the
    run's, so that the run's recorded validation numbers are reproduced; fp32 for lone weights.
    """
    from smallnets._checks import check_bool, check_choice, check_int
    from smallnets.checkpoint import resolve_weights
    from smallnets.zoo import load_weights
    from smallnets.data.skips import SkipLog
    from smallnets.distributed import resolve_device

    if split is not None:
        check_choice("split", split, SPLITS)
    if batch_size is not None:
        check_int("batch_size", batch_size)
    if precision is not None:
        check_choice("precision", precision, tuple(AMP_DTYPES))
    if workers is not None:
        check_int("workers", workers, minimum=0)
    check_bool("progress", progress)
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path to a .safetensors file or a run directory, got {type(weights).__qualname__}")
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a folder, an archive, 'cifar10'/'cifar100' or None, got {type(data).__qualname__}")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    dev = resolve_device(str(device))

    given = Path(weights)
    file = resolve_weights(given)
    run = find_run(file, given)
    model = load_weights(file, device=dev)
    meta = model.smallnets_meta
    model_classes = meta.get("classes")
    if not model_classes:
        raise ValueError(f"weights {str(file)!r} name no classes in their sidecar; evaluation matches the data's classes to them by name")
    preprocessing = meta.get("preprocessing")
    implicit = data is None
    if implicit:
        if run is None:
            raise ValueError(f"data must be given for weights outside a run directory ({str(file)!r} has no config.json beside it)")
        data = run.config.data.path
    data = os.fspath(data)
    own = run is not None and _same_data(run, data)
    split = split or ("val" if own else "all")  # the run's own data: never score its training images
    notes: list[str] = []

    if precision is None:
        precision = run.resolved.get("precision", "fp32") if run else "fp32"
        if precision == "fp16" and dev.type == "cpu":
            notes.append("the run used fp16, which needs a GPU: evaluated in fp32")
            precision = "fp32"
    elif precision == "fp16" and dev.type == "cpu":
        raise ValueError("precision must be fp32 or bf16 on CPU (fp16 needs a GPU), got 'fp16'")
    channels_last = bool(run.config.train.channels_last) if run else False
    if channels_last:
        model.to(memory_format=torch.channels_last)  # as the trainer held it
    skiplog = SkipLog()
    details: dict[str, Any] = {
        "weights": str(file), "run": str(run.dir) if run else None, "model": meta.get("model"),
        "epoch": (meta.get("extra") or {}).get("epoch"), "data": data, "split": split,
    }  # fmt: skip

    if split == "val":
        if run is None:
            raise ValueError(
                f"split='val' needs the run's data configuration, but {str(file)!r} has no run config.json beside it; "
                f"pass the run directory, or use split='all' to evaluate every image of {data!r}"
            )
        from smallnets.data import build_data

        cfg = run.config.data
        cfg = dataclasses.replace(
            cfg, path=data, channels_last=channels_last,
            eval_batch_size=batch_size if batch_size is not None else cfg.eval_batch_size,
            workers=workers if workers is not None else cfg.workers,
        )  # fmt: skip
        bundle = build_data(cfg, seed=run.config.train.seed, device=dev, progress=progress)
        data_classes = bundle.classes
        recorded = _recorded_val_files(run.split)
        same_split = recorded is not None and _same_files(recorded, bundle)
        changed: list[str] | None = None  # same names: those whose bytes differ from the record
        if same_split:
            same_content, changed = _content_check(run.split, bundle)
            if same_content is None:
                changed = None
                notes.append("the run's split.json records the validation files' names but not their content (an older run): "
                             "their content cannot be checked")  # fmt: skip
            elif not same_content:
                same_split = False
                n = len(bundle.val_files())
                notes.append(
                    f"{len(changed)} of the {n} validation files changed since the run (the same names, other bytes than "
                    f"split.json records): {', '.join(changed[:10])}{', ...' if len(changed) > 10 else ''}"
                    if changed else "the data's checksum differs from the run's: its validation samples changed since the run"
                )
        details["split_matches_run"] = same_split if recorded is not None else None
        details["changed_val_files"] = changed
        details["evaluated"] = f"validation split of {data} ({bundle.split.get('method')}, {bundle.num_val} images)"
        if recorded is not None and not same_split and changed is None:
            notes.append("the validation files differ from the run's split.json (different data): this is a new split")
        if not own:
            notes.append(f"{data} is not the run's data ({run.config.data.path}): split with the run's settings")
        if _same_preprocessing(bundle.preprocessing, preprocessing):
            batches: Iterable = bundle.val
        else:
            source = bundle.split.get("source") or {}
            if source.get("kind") not in ("folder", "archive") or preprocessing is None:
                raise ValueError(
                    f"the preprocessing that {data!r} gives ({bundle.preprocessing}) differs from the model's ({preprocessing}), "
                    f"and its validation images cannot be re-read as files"
                )
            val = bundle.val
            labels = val.labels.tolist() if hasattr(val, "labels") else list(val.dataset.labels)
            notes.append("this data's statistics differ from the run's: validation images preprocessed as the model expects (its sidecar)")
            batches = _file_batches(Path(source["path"]), source["kind"], bundle.val_files(), labels, preprocessing,
                                    batch_size=batch_size or cfg.eval_batch_size or cfg.batch_size, workers=workers,
                                    device=dev, channels_last=channels_last, skiplog=skiplog)  # fmt: skip
    else:
        if _is_cifar(data):
            raise ValueError(
                f"split='all' reads class folders and archives; for {data!r} use split='val' with the run directory "
                f"(CIFAR's validation split is its official test batch)"
            )
        if preprocessing is None:
            raise ValueError(f"weights {str(file)!r} record no preprocessing in their sidecar; split='all' needs it to prepare the images")
        from smallnets.data.image_sets import list_labelled

        files = list_labelled(data)
        skiplog = files.skiplog  # what listing left out; decoding adds the unreadable files
        data_classes = files.classes
        details["evaluated"] = f"every image of {files.where} ({len(files)} files)"
        default_bs = (run.config.data.eval_batch_size or run.config.data.batch_size) if run else 64
        batches = _file_batches(files.source, files.kind, files.names, files.labels, preprocessing,
                                batch_size=batch_size or default_bs, workers=workers, device=dev,
                                channels_last=channels_last, skiplog=skiplog)  # fmt: skip
    mapping = class_mapping(data_classes, model_classes, data)
    if mapping is not None:
        missing = len(model_classes) - len(data_classes)
        notes.append(
            f"the data has {len(data_classes)} of the model's {len(model_classes)} classes, matched by name"
            if missing else "the data names the model's classes in another order; matched by name"
        )
    result = evaluate(model, _relabel(batches, mapping), len(model_classes), classes=model_classes, device=dev,
                      amp_dtype=AMP_DTYPES[precision], channels_last=channels_last)  # fmt: skip
    if skiplog.total:
        notes.append(f"skipped {skiplog.total} file(s): " + ", ".join(f"{n} {r}" for r, n in sorted(skiplog.counts.items())))
        skiplog.warn(f"in {data}")
    details.update(precision=precision, device=str(dev), channels_last=channels_last, notes=notes, skipped=skiplog.as_dict())
    result.details = details
    return result
