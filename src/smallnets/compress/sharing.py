"""Weight sharing by per-layer k-means and centroid fine-tuning (Deep Compression, Han, Mao and Dally,
ICLR 2016, sec. 3).

Every selected layer's non-zero weights are clustered into 2**bits shared values by 1-D k-means
with linear initialisation (centroids evenly spaced between the layer's smallest and largest
weight: the paper's best, sec. 3.2, fig. 4); a weight is replaced by its centroid. Zeros are pruned
positions: they are not clustered, they stay exactly 0 and they are marked with index -1.

1-D k-means is done on the sorted weights: a cluster is a contiguous run of them, the boundaries
are the midpoints between neighbouring centroids, and the means come from one prefix sum, so a
Lloyd iteration costs O(k log n) after one sort of the layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smallnets._checks import suggest

__all__ = ["CentroidFineTuning", "SharedLayer", "SharedWeights", "kmeans_1d", "share_weights"]

PRUNED = -1  # the index of a pruned (zero) position
_KINDS = {"conv": nn.modules.conv._ConvNd, "linear": nn.Linear}


@dataclass
class SharedLayer:
    """One layer's shared weights: ``weight = codebook[indices]`` where ``indices >= 0``, else 0."""

    codebook: torch.Tensor  # float32 [k], k <= 2**bits; ascending as share_weights makes it (fine-tuning may reorder)
    indices: torch.Tensor  # int32, the weight's shape; PRUNED (-1) at zeros
    bits: int  # bits per index (the codebook has at most 2**bits entries)
    dtype: torch.dtype  # the weight's dtype (codebook values are exactly representable in it)
    iterations: int = 0  # Lloyd iterations run (0: the layer's distinct values were used as they are)

    @property
    def mask(self) -> torch.Tensor:
        """True at the non-pruned positions."""
        return self.indices >= 0

    @property
    def nonzero(self) -> int:
        return int(self.mask.sum())

    def weight(self) -> torch.Tensor:
        """The shared weight tensor (the layer's dtype, on the indices' device)."""
        idx = self.indices.long()
        table = torch.cat([self.codebook.to(idx.device, torch.float32), idx.new_zeros(1, dtype=torch.float32)])
        return table[torch.where(idx >= 0, idx, table.numel() - 1)].to(self.dtype)  # PRUNED -> the appended 0


class SharedWeights(Mapping[str, SharedLayer]):
    """The shared layers of a model, by state-dict name of their weight (``features.0.weight``)."""

    def __init__(self, layers: Mapping[str, SharedLayer]) -> None:
        self.layers = dict(layers)

    def __getitem__(self, name: str) -> SharedLayer:
        if name not in self.layers:
            raise KeyError(f"{name!r} is not a shared layer{suggest(name, self.layers)}")
        return self.layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def apply(self, model: nn.Module) -> None:
        """Write the shared weights into ``model`` (in place, without autograd)."""
        for name, layer in self.layers.items():
            param = _parameter(model, name)
            with torch.no_grad():
                param.copy_(layer.weight().to(param.device))

    def summary(self) -> dict[str, Any]:
        """Per layer: bits, clusters, non-zero weights, weights, Lloyd iterations."""
        return {
            name: {"bits": s.bits, "clusters": int(s.codebook.numel()), "nonzero": s.nonzero, "numel": s.indices.numel(),
                   "iterations": s.iterations}
            for name, s in self.layers.items()
        }  # fmt: skip


def _parameter(model: nn.Module, name: str) -> nn.Parameter:
    """The parameter under its state-dict name, looking through DataParallel/DDP and torch.compile wrappers."""
    while True:
        try:
            return model.get_parameter(name)
        except AttributeError:
            inner = getattr(model, "module", None) if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else None
            inner = inner if inner is not None else getattr(model, "_orig_mod", None)
            if not isinstance(inner, nn.Module):
                raise ValueError(f"the model has no parameter {name!r}; it is not the model these shared weights belong to") from None
            model = inner


def _check_bits(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
        raise ValueError(f"{name} must be an integer in 1..16, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# k-means in one dimension
# ---------------------------------------------------------------------------------------------


def kmeans_1d(values: torch.Tensor, k: int, *, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(centroids float64 [k] ascending, cluster of each value int64, iterations) of Lloyd's k-means.

    Linear initialisation: ``k`` centroids evenly spaced over [min, max]. Each iteration assigns every
    value to its nearest centroid (ties to the lower one) and moves each centroid to the mean of its
    values; an empty cluster keeps its centroid. It stops when no assignment changes, or after
    ``max_iter`` updates (``max_iter=0``: the linear initialisation and its assignment). The returned
    assignment is always the nearest-centroid one for the returned centroids. Deterministic.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    flat = values.detach().reshape(-1).to("cpu", torch.float64).numpy()
    if flat.size == 0:
        raise ValueError("values must not be empty")
    order = np.argsort(flat, kind="stable")
    centroids, cluster, iterations = _lloyd(flat[order], order, k, max_iter)
    return torch.from_numpy(centroids).to(values.device), torch.from_numpy(cluster).to(values.device), iterations


def _lloyd(ordered: np.ndarray, order: np.ndarray, k: int, max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    """kmeans_1d on values already sorted (``ordered = values[order]``); numpy, whose searchsorted costs
    O(k log n) here where torch's (2.13, CPU) walks the whole array."""
    prefix = np.concatenate([[0.0], np.cumsum(ordered)])
    lo, hi = ordered[0], ordered[-1]
    centroids = np.linspace(lo, hi, k) if k > 1 else np.array([(lo + hi) / 2])

    def edges_of(c: np.ndarray) -> np.ndarray:
        # cluster j holds the sorted values in (b[j-1], b[j]], b the midpoints: edge j+1 = how many are <= b[j]
        return np.concatenate([[0], np.searchsorted(ordered, (c[:-1] + c[1:]) / 2, side="right"), [ordered.size]])

    edges = edges_of(centroids)
    iterations = 0
    while iterations < max_iter:
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        iterations += 1
        new = edges_of(centroids)
        if np.array_equal(new, edges):
            break
        edges = new
    cluster = np.empty(ordered.size, dtype=np.int64)
    cluster[order] = np.repeat(np.arange(k), np.diff(edges))
    return centroids, cluster, iterations


def _share_tensor(weight: torch.Tensor, bits: int, max_iter: int) -> SharedLayer:
    w = weight.detach()
    mask = w != 0
    indices = torch.full(w.shape, PRUNED, dtype=torch.int32, device=w.device)
    flat = w[mask].to("cpu", torch.float64).numpy()
    if flat.size == 0:
        return SharedLayer(torch.zeros(0, dtype=torch.float32), indices, bits, w.dtype)
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    iterations = 0
    if int(starts.sum()) <= 2**bits:  # few distinct values: they are the codebook, exactly
        codebook = ordered[starts]
        cluster = np.empty(flat.size, dtype=np.int64)
        cluster[order] = np.cumsum(starts) - 1
    else:
        centroids, cluster, iterations = _lloyd(ordered, order, 2**bits, max_iter)
        used = np.flatnonzero(np.bincount(cluster, minlength=2**bits))  # drop empty clusters
        remap = np.zeros(2**bits, dtype=np.int64)
        remap[used] = np.arange(used.size)
        codebook, cluster = centroids[used], remap[cluster]
    # rounded to the weight's dtype (and held as float32): the codebook is exactly what the weights hold
    codebook = torch.from_numpy(codebook).to(w.dtype).float()
    indices[mask] = torch.from_numpy(cluster).to(device=w.device, dtype=torch.int32)
    return SharedLayer(codebook, indices, bits, w.dtype, iterations)


def share_weights(
    model: nn.Module,
    *,
    bits: int = 8,
    layer_bits: Mapping[str, int] | None = None,
    fc_bits: int | None = None,
    include: Iterable[str] = ("conv", "linear"),
    max_iter: int = 100,
    inplace: bool = False,
) -> tuple[nn.Module, SharedWeights]:
    """Share the weights of every convolution and linear layer: (model, SharedWeights).

    Per layer, k-means with k = 2**bits over its non-zero weights (see ``kmeans_1d``); a layer with
    at most k distinct non-zero values keeps them exactly. ``bits`` applies to convolutions,
    ``fc_bits`` (default: ``bits``) to linear layers (the paper: 8 for conv, 5 for fc);
    ``layer_bits`` sets single layers by the state-dict name of their weight and overrides both.
    ``include``: which layer kinds, of "conv" and "linear". Zeros (pruned weights) stay 0. Only the
    values of the weights change: state-dict keys, shapes and dtypes do not. ``inplace=False``
    works on a deep copy and leaves ``model`` as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    _check_bits("bits", bits)
    if fc_bits is not None:
        _check_bits("fc_bits", fc_bits)
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not isinstance(inplace, bool):
        raise ValueError(f"inplace must be True or False, got {inplace!r}")
    kinds = (include,) if isinstance(include, str) else tuple(include)
    for kind in kinds:
        if kind not in _KINDS:
            raise ValueError(f"include must name layer kinds of {', '.join(map(repr, _KINDS))}; got {kind!r}{suggest(kind, _KINDS)}")
    if not kinds:
        raise ValueError("include must name at least one layer kind ('conv', 'linear')")
    layer_bits = dict(layer_bits or {})

    if not inplace:
        model = copy.deepcopy(model)
    targets: dict[str, tuple[nn.Parameter, int]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        kind = next((k for k in kinds if isinstance(module, _KINDS[k])), None)
        weight = getattr(module, "weight", None)
        if kind is None or not isinstance(weight, nn.Parameter) or id(weight) in seen:  # a tied weight is shared once
            continue
        seen.add(id(weight))
        if not weight.is_floating_point():
            raise TypeError(f"{module_name}.weight is {weight.dtype}; only floating-point weights can be shared")
        name = f"{module_name}.weight" if module_name else "weight"
        targets[name] = (weight, fc_bits if kind == "linear" and fc_bits is not None else bits)
    for name, value in layer_bits.items():
        if name not in targets:
            raise ValueError(f"layer_bits names {name!r}, which is not a shared layer's weight{suggest(name, targets)}")
        _check_bits(f"layer_bits[{name!r}]", value)

    layers = {}
    for name, (weight, default) in targets.items():
        layer = _share_tensor(weight, layer_bits.get(name, default), max_iter)
        with torch.no_grad():
            weight.copy_(layer.weight())
        layers[name] = layer
    return model, SharedWeights(layers)


# ---------------------------------------------------------------------------------------------
# Centroid fine-tuning
# ---------------------------------------------------------------------------------------------


class CentroidFineTuning:
    """Fine-tune the shared values, not the weights (Deep Compression sec. 3.3): a trainer hook.

    The gradient of a centroid is the sum of the gradients of the weights that share it (the
    paper's eq. 3). Two ways to apply it:

    * ``lr=None`` (through the optimizer): ``after_backward`` sets every shared weight's gradient to
      its cluster's summed gradient and a pruned weight's to 0, so one optimizer step moves all
      weights of a cluster alike; for plain SGD that is the paper's update, centroid -= lr * summed
      gradient, with the optimizer's own lr. ``after_step`` then snaps every weight to its cluster's
      value, the mean of the cluster's updated weights (which equals the common value when they all
      moved alike, as they do under SGD, momentum and Adam once the states were built from these
      gradients), rounds it to the weight's dtype and writes it back, pruned positions to 0: a
      momentum buffer or weight decay that would break sharing is undone there.
    * ``lr`` given (the hook's own update): ``after_step`` sets centroid -= lr * summed gradient
      itself, whatever the optimizer did to those weights. Usable with no optimizer at all.

    ``reduce="mean"`` divides the summed gradient by the cluster size (a centroid of a large cluster
    then moves no faster than one weight would). Methods the trainer calls: ``start(model,
    total_steps)``, ``after_backward(model, step)`` (gradients ready, before ``optimizer.step``),
    ``after_step(model, step)``, ``describe()``. A hand-written loop calls ``after_backward`` after
    ``loss.backward()`` and ``after_step`` after ``optimizer.step()``. The codebooks of ``shared``
    are updated in place, so the SharedWeights can be written to a compressed file afterwards.
    """

    def __init__(self, shared: SharedWeights, lr: float | None = None, *, reduce: str = "sum") -> None:
        if not isinstance(shared, SharedWeights):
            raise TypeError(f"shared must be the SharedWeights that share_weights returned, got {type(shared).__qualname__}")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0):
            raise ValueError(f"lr must be None or a finite number > 0, got {lr!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' (the paper) or 'mean', got {reduce!r}{suggest(reduce, ('sum', 'mean'))}")
        self.shared, self.lr, self.reduce = shared, None if lr is None else float(lr), reduce
        self._grads: dict[str, torch.Tensor] = {}
        self._flat: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # name -> (mask, cluster, counts)

    def _index(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cached = self._flat.get(name)
        if cached is None or cached[0].device != device:
            layer = self.shared[name]
            idx = layer.indices.reshape(-1).to(device)
            mask = idx >= 0
            cluster = idx[mask].long()
            counts = torch.bincount(cluster, minlength=layer.codebook.numel())
            cached = self._flat[name] = (mask, cluster, counts)
        return cached

    def start(self, model: nn.Module, total_steps: int | None = None) -> None:
        """Check that ``model`` has the shared layers, and write the shared weights into it."""
        for name, layer in self.shared.items():
            param = _parameter(model, name)
            if tuple(param.shape) != tuple(layer.indices.shape):
                raise ValueError(f"{name} has shape {tuple(param.shape)}, but its shared weights have {tuple(layer.indices.shape)}")
        self.shared.apply(model)

    def after_backward(self, model: nn.Module, step: int | None = None) -> None:
        self._grads.clear()
        for name, layer in self.shared.items():
            param = _parameter(model, name)
            if param.grad is None:
                continue
            mask, cluster, counts = self._index(name, param.device)
            grad = param.grad.reshape(-1)
            summed = torch.zeros(layer.codebook.numel(), dtype=torch.float32, device=grad.device)
            summed.index_add_(0, cluster, grad[mask].float())
            if self.reduce == "mean":
                summed /= counts.clamp(min=1)
            self._grads[name] = summed
            if self.lr is None:
                new = torch.zeros_like(grad)
                new[mask] = summed[cluster].to(grad.dtype)
                param.grad.copy_(new.reshape(param.grad.shape))

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int | None = None) -> None:
        for name, layer in self.shared.items():
            param = _parameter(model, name)
            mask, cluster, counts = self._index(name, param.device)
            codebook = layer.codebook.to(param.device)
            if self.lr is not None:
                if name not in self._grads:
                    continue
                codebook = codebook - self.lr * self._grads[name]
            else:
                sums = torch.zeros(codebook.numel(), dtype=torch.float64, device=param.device)
                sums.index_add_(0, cluster, param.detach().reshape(-1)[mask].double())
                codebook = torch.where(counts > 0, sums / counts.clamp(min=1), codebook.double()).float()
            layer.codebook = codebook.to(layer.dtype).float().to(layer.codebook.device)
            flat = torch.zeros(param.numel(), dtype=param.dtype, device=param.device)
            flat[mask] = layer.codebook.to(param.device)[cluster].to(param.dtype)
            param.copy_(flat.reshape(param.shape))
        self._grads.clear()

    def describe(self) -> dict[str, Any]:
        return {"type": "CentroidFineTuning", "layers": len(self.shared), "lr": self.lr, "reduce": self.reduce,
                "bits": sorted({s.bits for s in self.shared.values()})}  # fmt: skip
