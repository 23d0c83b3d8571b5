"""Image sets without torch: the files named on a command line (``find_images``, for predict)
and every image of a labelled class-folder tree or archive (``list_labelled``, for evaluation).

The layouts and the rules are those of ``smallnets.data.image_sets`` (its docstring), which
re-exports these; they live here so that the ONNX runtime path (``smallnets.runtime``) lists the
same files on an install without PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from smallnets._checks import check_bool
from smallnets.data import skips
from smallnets.data.skips import SkipLog
from smallnets.data.sources import _SPLIT_DIRS, _VAL_DIRS, ArchiveSource, is_archive, is_junk, links_note, walk_folder
from smallnets.imaging import is_image_name


# ---------------------------------------------------------------------------------------------
# Unlabelled: files named on the command line (predict)
# ---------------------------------------------------------------------------------------------


def find_images(inputs: str | os.PathLike | Iterable[str | os.PathLike], *, follow_links: bool = False) -> list[str]:
    """Image files of ``inputs`` in order: a file as named (any suffix: it was asked for), a
    directory walked recursively for image files (by suffix, hidden ones left out), sorted.

    A directory is walked as training walks a data folder: each file once, under its own path;
    symbolic links that loop, lead to a path listed anyway or (unless ``follow_links``) out of the
    directory are skipped with a warning naming them."""
    check_bool("follow_links", follow_links)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("images must name at least one image file or directory, got none")
    out: list[str] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"images must be paths (str or os.PathLike), got {type(item).__qualname__}: {item!r}"[:300])
        path = Path(item)
        if path.is_dir():
            skipped: list[tuple[str, str, str]] = []
            names = sorted(r for r, _ in walk_folder(path, follow_links, skipped) if is_image_name(r))
            if not names:
                raise ValueError(f"images: directory {os.fspath(item)!r} contains no image files (suffixes: .jpg, .png, .webp, ...)"
                                 f"{links_note(skipped)}")  # fmt: skip
            skiplog = SkipLog()
            skiplog.extend(skipped)
            skiplog.warn(f"in {os.fspath(item)}")
            out += [os.path.join(os.fspath(item), *rel.split("/")) for rel in names]
        elif path.exists():
            out.append(os.fspath(item))
        else:
            raise FileNotFoundError(f"images: no such file or directory: {os.fspath(item)!r}")
    return out


# ---------------------------------------------------------------------------------------------
# Labelled: every image of a class-folder tree or archive (evaluation)
# ---------------------------------------------------------------------------------------------


@dataclass
class LabelledFiles:
    """Every usable image of a labelled set, class-major and sorted within each class."""

    source: Path  # the folder or archive
    kind: str  # "folder" | "archive"
    part: str  # the folder evaluated, relative to the source ("" for a plain class tree)
    classes: list[str]
    names: list[str]  # relative to a folder source, member names of an archive
    labels: list[int]
    skiplog: SkipLog = field(default_factory=SkipLog)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def where(self) -> str:
        return os.path.join(self.source, *self.part.split("/")) if self.part else str(self.source)


def list_labelled(path: str | os.PathLike, *, follow_links: bool = False) -> LabelledFiles:
    """Every image of a class-folder tree or archive (see the module docstring for the layouts).

    A folder is walked as training walks one (``FolderSource``): a file's class is the folder it is
    in, links that loop or lead to a path listed anyway are skipped, and links out of the folder
    too unless ``follow_links``; skipped links are recorded in ``skiplog``. A truncated or corrupt
    archive is a ValueError naming it."""
    check_bool("follow_links", follow_links)
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"data must be an existing folder or .tar/.tar.gz/.tgz archive, got {os.fspath(path)!r}")
    skiplog = SkipLog()
    links = ""
    if source.is_dir():
        skipped: list[tuple[str, str, str]] = []
        kind, listing = "folder", list(walk_folder(source, follow_links, skipped))
        skiplog.extend(skipped)
        links = links_note(skipped)
    elif is_archive(source):
        kind, listing = "archive", []
        for _, m, name in ArchiveSource(source).members():
            if name is None:
                skiplog.add(m.name, skips.UNSAFE)
            else:
                listing.append((name, m.size))
    else:
        raise ValueError(f"data must be a folder or a .tar/.tar.gz/.tgz archive of class folders, got the file {os.fspath(path)!r}")
    where = str(source)
    entries = [(tuple(n.split("/")), n, s) for n, s in listing if not is_junk(tuple(n.split("/")))]
    if not entries:
        raise ValueError(f"data {where!r} contains no files (expected class folders of images){links}")

    base: tuple[str, ...] = ()
    firsts = {p[0] for p, _, _ in entries}
    if len(firsts) == 1 and next(iter(firsts)) not in _SPLIT_DIRS and any(len(p) >= 3 for p, _, _ in entries):
        base = (next(iter(firsts)),)  # one shared top-level folder, as archives often have
    top = {p[len(base)] for p, _, _ in entries if len(p) > len(base) + 1}
    part = ""
    if top and top <= set(_SPLIT_DIRS):
        vals = [d for d in _VAL_DIRS if d in top]
        if len(vals) > 1:
            raise ValueError(f"data {where!r}: found both val/ and validation/; keep one")
        if "test" in top:
            part = "test"
        elif vals:
            part = vals[0]
        else:
            raise ValueError(
                f"data {where!r} holds only a train/ folder; evaluating every image means a held-out set "
                f"(ROOT/<class>/..., ROOT/test/<class>/... or ROOT/val/<class>/...). To evaluate training "
                f"images anyway, pass {os.path.join(where, *base, 'train')!r}; for the run's validation images use split='val'"
            )
    lead = (*base, part) if part else base
    groups: dict[str, list[str]] = {}
    for parts, name, size in entries:
        if part and len(parts) > len(base) + 1 and parts[len(base)] != part:
            continue  # another split folder (train/ beside test/): not part of this set
        rel = parts[len(lead):]
        if parts[: len(lead)] != lead or len(rel) < 2:
            skiplog.add(name, skips.OUTSIDE)
        elif not is_image_name(name):
            skiplog.add(name, skips.NOT_IMAGE)
        elif size == 0:
            skiplog.add(name, skips.EMPTY)
        elif size < 0:
            skiplog.add(name, skips.UNREADABLE, "cannot stat")
        else:
            groups.setdefault(rel[0], []).append(name)
    classes = sorted(groups)
    if not classes:
        raise ValueError(f"data {where!r}{f' ({part}/)' if part else ''} has no class folders with images{links}")
    names, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(groups[c])
        names += files
        labels += [i] * len(files)
    return LabelledFiles(source, kind, "/".join(lead) if part else "", classes, names, labels, skiplog)
