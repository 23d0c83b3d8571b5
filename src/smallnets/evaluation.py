"""``evaluate_weights``: saved weights (a run directory or a weights file) on their run's validation
split, rebuilt as the run built it, or on every image of a test set. The metrics themselves are
``smallnets.metrics``; what a run recorded (its data, its split) is read back through
``smallnets.rundir``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from smallnets._precision import AMP_DTYPES
from smallnets.metrics import EvalResult, autocast_context, class_mapping, evaluate
from smallnets.rundir import find_run

__all__ = ["EvalResult", "autocast_context", "class_mapping", "evaluate", "evaluate_weights"]

SPLITS = ("val", "all")


def _same_preprocessing(a: dict | None, b: dict | None) -> bool:
    if not a or not b:
        return False
    for key in ("resize", "crop"):
        if a.get(key) != b.get(key):
            return False
    return all(len(a[k]) == len(b[k]) and all(abs(float(x) - float(y)) <= 1e-9 for x, y in zip(a[k], b[k])) for k in ("mean", "std"))




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


def _source_run_of_onnx(meta: dict):
    """(run, note) of the training run an ONNX file was exported from, by its ``smallnets.source``
    metadata (``meta``: the file's parsed smallnets metadata), when that run is still there; (None, None) otherwise."""
    from smallnets.checkpoint import _file_sha256
    from smallnets.rundir import find_run

    source = meta.get("source")
    if not source or not Path(source).is_file():
        return None, None
    run = find_run(Path(source), Path(source))
    if run is None:
        return None, None
    note = f"its run is the one its source weights lie in ({source}, from the file's metadata)"
    digest = meta.get("source_sha256")
    if digest and meta.get("source_sha256_of") == "file" and _file_sha256(Path(source)) != digest:
        note += "; those weights changed since the export (the split is still that run's)"
    return run, note


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
    run: str | os.PathLike | None = None,
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

    ``run``: a run directory whose data configuration and split to use for weights that do not lie
    in it (an ONNX file exported from it, say): ``split="val"`` then scores that run's validation images.

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
    if run is not None:  # the run whose data and split to use, for weights kept elsewhere (an exported file)
        from smallnets.rundir import RunDir

        if not RunDir(Path(run)).config.is_file():
            raise FileNotFoundError(f"run must be a run directory with a config.json, got {os.fspath(run)!r}")
        run = RunDir(Path(run)).read_back()
    else:
        run = find_run(file, given)
    if file.suffix == ".onnx" and str(device) == "auto":
        dev = torch.device("cpu")  # ONNX Runtime's CPU provider
    model = load_weights(file, device=dev if file.suffix != ".onnx" or dev.type != "cpu" else None)
    meta = model.smallnets_meta
    source_note = None
    if run is None and file.suffix == ".onnx":  # an exported / quantized file kept elsewhere: the run of the weights it came from
        run, source_note = _source_run_of_onnx(meta.get("onnx_metadata") or {})
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
    own = run is not None and run.trained_on(data)
    split = split or ("val" if own else "all")  # the run's own data: never score its training images
    notes: list[str] = [source_note] if source_note else []

    onnx_precision = meta.get("precision") if meta.get("format") == "onnx" else None
    if onnx_precision is not None:  # an exported file runs in its own precision, on ONNX Runtime
        if precision is not None:
            raise ValueError(f"precision must be None for an ONNX file (it runs in the precision it was exported in, "
                             f"{onnx_precision}), got {precision!r}")  # fmt: skip
        if dev.type != "cpu":
            raise ValueError(f"device must be 'cpu' or 'auto' for an ONNX file (ONNX Runtime's CPU provider), got {str(device)!r}")
        precision = "fp32"  # no autocast around the runtime call
    elif precision is None:
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
        check = run.check_split(bundle)
        same_split, changed = check.matches, check.changed
        notes.extend(check.notes)
        details["split_matches_run"] = same_split
        details["changed_val_files"] = changed
        details["evaluated"] = f"validation split of {data} ({bundle.split.get('method')}, {bundle.num_val} images)"
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
        from smallnets.data.cifar import CIFAR

        if data in CIFAR:
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
    details.update(precision=f"{onnx_precision} (ONNX Runtime)" if onnx_precision else precision, device=str(dev), channels_last=channels_last, notes=notes, skipped=skiplog.as_dict())
    result.details = details
    return result
