"""Top-k class probabilities (softmax) of a trained model for image files, with the eval preprocessing from its sidecar."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from smallnets._checks import check_int
from smallnets.predictions import ClassScore, Prediction

__all__ = ["ClassScore", "Prediction", "iter_predictions", "predict"]


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def prepare_model(
    model_or_weights: nn.Module | str | os.PathLike, device: str | torch.device | None = None
) -> tuple[nn.Module, list[str], dict]:
    """(model, class names, preprocessing): a given model as it is, or weights loaded with ``load_weights``."""
    from smallnets.zoo import load_weights
    from smallnets.distributed import resolve_device

    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if isinstance(model_or_weights, (str, os.PathLike)):
        model = load_weights(model_or_weights, device=resolve_device(str(device)) if device is not None else "cpu")
    elif isinstance(model_or_weights, nn.Module):
        model = model_or_weights
        if device is not None and resolve_device(str(device)) != _model_device(model):
            raise ValueError(
                f"device must be None or the given model's device ({_model_device(model)}), got {str(device)!r}; "
                f"move the model first (model.to(device)) or pass the weights path"
            )
    else:
        raise TypeError(
            f"model_or_weights must be a torch.nn.Module or a weights path (.safetensors or run directory), "
            f"got {type(model_or_weights).__qualname__}"
        )
    meta = getattr(model, "smallnets_meta", None) or {}
    preprocessing = meta.get("preprocessing")
    if not preprocessing:
        raise ValueError(
            "model must carry its eval preprocessing in model.smallnets_meta['preprocessing'] (as models loaded with "
            "smallnets.load_weights from a trained run do); this model has none, so its inputs cannot be prepared"
        )
    classes = meta.get("classes")
    return model, (list(classes) if classes else []), dict(preprocessing)


@torch.inference_mode()
def iter_predictions(
    model_or_weights: nn.Module | str | os.PathLike,
    images: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    top_k: int = 5,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    workers: int | None = None,
) -> Iterator[Prediction]:
    """``predict`` one result at a time, as each batch is done (in input order)."""
    from smallnets.data import make_eval_transform
    from smallnets.data.image_sets import file_batches, find_images, normalized

    check_int("top_k", top_k)
    check_int("batch_size", batch_size)
    if workers is not None:
        check_int("workers", workers, minimum=0)
    paths = find_images(images)  # every path checked before any work
    model, classes, preprocessing = prepare_model(model_or_weights, device)
    transform = make_eval_transform(preprocessing)
    dev = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        for x, ok, failed in normalized(file_batches(paths, transform, batch_size, workers), transform, dev):
            results = {i: Prediction(os.fspath(paths[i]), (), detail) for i, detail in failed}
            if x is not None:
                probs = torch.softmax(model(x).float(), dim=1).cpu()
                if classes and probs.shape[1] != len(classes):
                    raise ValueError(f"model has {probs.shape[1]} outputs but its sidecar names {len(classes)} classes")
                p, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
                for row, i in enumerate(ok):
                    scores = tuple(
                        ClassScore(classes[j] if classes else str(j), j, pr)
                        for pr, j in zip(p[row].tolist(), idx[row].tolist())
                    )
                    results[i] = Prediction(os.fspath(paths[i]), scores)
            yield from (results[i] for i in sorted(results))
    finally:
        model.train(was_training)


def predict(
    model_or_weights: nn.Module | str | os.PathLike,
    images: str | os.PathLike | Iterable[str | os.PathLike],
    top_k: int = 5,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    *,
    workers: int | None = None,
) -> list[Prediction]:
    """Top-``top_k`` classes and softmax probabilities of every image.

    ``model_or_weights``: a model carrying ``smallnets_meta`` (from ``load_weights``), or a weights
    file / run directory. ``images``: files and directories (walked recursively for image files,
    sorted). Images are prepared with the model's eval preprocessing (its sidecar) and run in
    batches of ``batch_size``, in eval mode without gradients. A file that cannot be read gives a
    ``Prediction`` with ``error`` set and no scores; the others go on. ``device``: where weights are
    loaded (default CPU); a given model runs where it is.
    """
    return list(iter_predictions(model_or_weights, images, top_k=top_k, batch_size=batch_size, device=device, workers=workers))
