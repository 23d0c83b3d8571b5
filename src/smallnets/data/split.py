"""Train/validation splits: deterministic, stratified holdouts and given val folders, with a JSON record."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from smallnets.data.sources import Catalog

HOLDOUT = "stratified holdout"  # val_fraction of each class, drawn with split_seed
GIVEN = "given val folder"
CIFAR_TEST = "official test batch"


def _class_rng(seed: int, class_name: str) -> np.random.Generator:
    # Seeded by class name, not index: adding a class does not reshuffle the others.
    digest = hashlib.sha256(f"smallnets split\0{seed}\0{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_split(catalog: Catalog, *, val_part: str | None, fraction: float, seed: int, usable: Sequence[bool] | None = None) -> tuple[list[int], list[int]]:
    """(train ids, val ids) into the catalog, each ascending.

    ``val_part`` names the catalog part used as validation as given ("val" folder, CIFAR "test");
    None holds out ``round(fraction * n)`` (at least 1, at most n - 1) of each class of the train part.
    Entries with ``usable[i]`` False (known to be undecodable) take no part.
    """
    ok = usable if usable is not None else [True] * len(catalog)
    if val_part is not None:
        train = [i for i, p in enumerate(catalog.parts) if p == "train" and ok[i]]
        val = [i for i, p in enumerate(catalog.parts) if p == val_part and ok[i]]
        return train, val
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (p, label) in enumerate(zip(catalog.parts, catalog.labels)):
        if p == "train" and ok[i]:
            by_class[label].append(i)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label]
        name, n = catalog.classes[label], len(members)
        if n < 2:
            raise ValueError(
                f"val_fraction={fraction}: class {name!r} has {n} image; an automatic split needs at least 2 per class "
                f"(one to train on, one to validate)"
            )
        n_val = min(max(1, int(fraction * n + 0.5)), n - 1)
        chosen = set(_class_rng(seed, name).permutation(n)[:n_val].tolist())
        for j, i in enumerate(members):
            (val if j in chosen else train).append(i)
    return sorted(train), sorted(val)


def check_split(catalog: Catalog, train: Sequence[int], val: Sequence[int], where: str) -> None:
    """Both sides non-empty and holding the same classes; else a ValueError before training starts."""
    if not train or not val:
        side = "training" if not train else "validation"
        raise ValueError(f"path {where!r}: the {side} split is empty (train {len(train)}, val {len(val)} images)")
    names = catalog.classes
    tr = {catalog.labels[i] for i in train}
    va = {catalog.labels[i] for i in val}
    if tr != va:
        raise ValueError(
            f"path {where!r}: train and val must hold the same classes; only in train: {sorted(names[c] for c in tr - va)}, "
            f"only in val: {sorted(names[c] for c in va - tr)}"
        )
    if len(tr) < 2:
        raise ValueError(f"path {where!r}: found 1 usable class ({names[next(iter(tr))]!r}); classification needs at least 2")


def split_record(catalog: Catalog, train: Sequence[int], val: Sequence[int], *, method: str, seed: int | None, fraction: float | None, source: dict) -> dict:
    val_names = [catalog.names[i] for i in val]
    count = lambda ids: Counter(catalog.labels[i] for i in ids)  # noqa: E731
    tr, va = count(train), count(val)
    return {
        "method": method,
        "seed": seed,
        "fraction": fraction,
        "source": source,
        "classes": list(catalog.classes),
        "num_train": len(train),
        "num_val": len(val),
        "counts": {
            "train": {c: tr.get(i, 0) for i, c in enumerate(catalog.classes)},
            "val": {c: va.get(i, 0) for i, c in enumerate(catalog.classes)},
        },
        "val_files_sha256": hashlib.sha256("\n".join(val_names).encode("utf-8", "surrogateescape")).hexdigest(),
    }
