"""Image sources: class-folder trees and .tar/.tar.gz archives of them, listed into a Catalog.

Layouts (after stripping one shared top-level folder, as archives often have):
``train/<class>/**`` with optional ``val/<class>/**`` (or ``validation/``; a ``test/`` folder is
ignored), or a plain class tree ``<class>/**``. Hidden files and ``__MACOSX`` are ignored; other
files that are not images, empty files and files outside class folders are skipped and counted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from smallnets.data import skips
from smallnets.imaging import image_size, is_image_name
from smallnets.progress import Progress

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_VAL_DIRS = ("val", "validation")
_SPLIT_DIRS = ("train", *_VAL_DIRS, "test")
# what reading a damaged archive raises: tarfile's errors, zlib's (gzip), the bz2/lzma ones (OSError, EOFError)
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
SAMPLE_SIZE = 64  # images whose sizes decide pipeline="auto" and the tensor path's native size


@dataclass(frozen=True)
class Catalog:
    """Every usable sample of a source before decoding, class-major and sorted within each class."""

    classes: tuple[str, ...]
    names: tuple[str, ...]  # paths relative to the source (archive member names)
    labels: tuple[int, ...]
    parts: tuple[str, ...]  # "train", "val" (a val folder) or "test" (CIFAR's test batch)
    layout: str  # how the source was read, for the split record
    skipped: tuple[tuple[str, str, str], ...] = ()  # (name, reason, detail) found while listing

    def __len__(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "layout": self.layout, "skipped": [list(s) for s in self.skipped]}

    @classmethod
    def from_json(cls, meta: dict, names: list[str], labels: list[int], parts: list[str]) -> Catalog:
        return cls(tuple(meta["classes"]), tuple(names), tuple(labels), tuple(parts), meta["layout"], tuple(tuple(s) for s in meta["skipped"]))


def is_junk(parts: tuple[str, ...]) -> bool:
    """Hidden parts (.name) and ``__MACOSX``: left out of every listing, silently."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def catalog_from_listing(listing: Iterable[tuple[str, int]], where: str, *, limit_per_class: int | None = None, pre_skipped: Iterable[tuple[str, str, str]] = ()) -> Catalog:
    """Read the layout out of (relative posix name, size in bytes) pairs; raise ValueError on layouts it cannot read."""
    entries = []
    for name, size in listing:
        parts = tuple(name.split("/"))  # names are normalised relative posix paths
        if parts and not is_junk(parts):
            entries.append((parts, name, size))
    skipped = list(pre_skipped)
    links = links_note(skipped)
    if not entries:
        raise ValueError(f"path {where!r} contains no files (expected class folders of images){links}")
    depth, layout_note = 0, ""
    firsts = {p[0] for p, _, _ in entries}
    if len(firsts) == 1 and next(iter(firsts)) not in _SPLIT_DIRS and any(len(p) >= 3 for p, _, _ in entries):
        depth, layout_note = 1, f" inside top-level folder {next(iter(firsts))!r}"
    top = {p[depth] for p, _, _ in entries if len(p) > depth + 1}
    split_layout = "train" in top
    if split_layout:
        unexpected = sorted(top - set(_SPLIT_DIRS))
        if unexpected:
            raise ValueError(
                f"path {where!r}: found train/ beside other folders {unexpected}; expected ROOT/train/<class>/... "
                f"with optional ROOT/val/<class>/..., or only class folders ROOT/<class>/..."
            )
        vals = [d for d in _VAL_DIRS if d in top]
        if len(vals) > 1:
            raise ValueError(f"path {where!r}: found both val/ and validation/; keep one")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for parts, name, size in entries:
        rel = parts[depth:]
        if split_layout:
            if rel[0] == "test" and len(rel) > 1:
                continue  # unlabelled in ImageNet-style trees
            if len(rel) < 3 or rel[0] not in _SPLIT_DIRS:
                skipped.append((name, skips.OUTSIDE, ""))
                continue
            part, cls = ("train" if rel[0] == "train" else "val"), rel[1]
        else:
            if len(rel) < 2:
                skipped.append((name, skips.OUTSIDE, ""))
                continue
            part, cls = "train", rel[0]
        if not is_image_name(name):
            skipped.append((name, skips.NOT_IMAGE, ""))
        elif size == 0:
            skipped.append((name, skips.EMPTY, ""))
        elif size < 0:
            skipped.append((name, skips.UNREADABLE, "cannot stat"))
        else:
            groups[(part, cls)].append(name)
    train_classes = sorted({c for p, c in groups if p == "train"})
    val_classes = sorted({c for p, c in groups if p == "val"})
    if split_layout and any(d in top for d in _VAL_DIRS) and not val_classes:
        raise ValueError(f"path {where!r}: the val/ folder holds no usable images; fill it or remove it for an automatic split")
    if val_classes and val_classes != train_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ValueError(
            f"path {where!r}: train and val must have the same class folders (each with images); "
            f"only in train: {only_train}, only in val: {only_val}"
        )
    if len(train_classes) < 2:
        found = f"1 class ({train_classes[0]!r})" if train_classes else "no class folders with images"
        raise ValueError(f"path {where!r}: found {found}; classification needs at least 2 class folders of images{links}")
    index = {c: i for i, c in enumerate(train_classes)}
    names, labels, parts_out = [], [], []
    for part in ("train", "val"):
        for cls in train_classes:
            files = sorted(groups.get((part, cls), ()))
            if limit_per_class is not None:
                files = files[:limit_per_class]
            names += files
            labels += [index[cls]] * len(files)
            parts_out += [part] * len(files)
    if split_layout:
        layout = "train/ and val/ class folders" if val_classes else "train/ class folders"
    else:
        layout = "class folders"
    return Catalog(tuple(train_classes), tuple(names), tuple(labels), tuple(parts_out), layout + layout_note, tuple(skipped))


def links_note(skipped: Iterable[tuple[str, str, str]]) -> str:
    """'; N link(s) outside the data folder were not followed (...)' for the skipped links out, else ''."""
    outside = sum(1 for _, reason, _ in skipped if reason == skips.LINK_OUTSIDE)
    return f"; {outside} link(s) outside the data folder were not followed (follow_links=True follows them)" if outside else ""


def evenly_spaced(n: int, k: int) -> list[int]:
    k = min(n, k)
    return [i * n // k for i in range(k)]


def summarize_sizes(sizes: list[tuple[int, int]], where: str) -> dict:
    """Longest side seen, and the native size: the most common shorter side (ties: the larger)."""
    if not sizes:
        raise ValueError(f"path {where!r}: none of the sampled images could be read; is it a folder of images?")
    counts = Counter(min(s) for s in sizes)
    best = max(counts.values())
    return {"max_side": max(max(s) for s in sizes), "native": max(s for s, c in counts.items() if c == best), "sampled": len(sizes)}


class FolderSource:
    """A class-folder tree on disk.

    Symbolic links: a file's class is the folder it is listed in, so the walk lists every file of the
    tree once, under its own path, and follows a link only where that cannot copy or relabel files:

    * a link to a folder it is in (``cat/up -> ..``) is a loop: skipped;
    * a link to a file or folder of the tree (``cat/dogs -> ../dog``) is skipped: its target is
      listed under its own name (a link into a hidden folder, which is not listed, is followed);
    * a link leading outside the tree is skipped unless ``follow_links`` (DataConfig.follow_links):
      then its files belong to the class of the folder the link is in; loops and ways back into the
      tree met out there are skipped as above.

    Skipped links are counted and named with the other files left out (a warning when data is built).
    """

    kind = "folder"

    def __init__(self, root: Path, *, follow_links: bool = False):
        self.root = root
        self.follow_links = follow_links

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.root)}

    def listing(self, progress: bool = False, skipped: list[tuple[str, str, str]] | None = None) -> list[tuple[str, int]]:
        """(relative posix name, size in bytes; -1 when stat fails) of the files; links not followed go to ``skipped``."""
        out = []
        with Progress(f"listing {self.root}", None, unit="files", enabled=progress) as bar:
            for rel, size in walk_folder(self.root, self.follow_links, [] if skipped is None else skipped):
                out.append((rel, size))
                bar.update()
        return out

    def catalog(self, limit_per_class: int | None, progress: bool = False) -> Catalog:
        skipped: list[tuple[str, str, str]] = []
        listing = self.listing(progress, skipped)
        return catalog_from_listing(listing, str(self.root), limit_per_class=limit_per_class, pre_skipped=skipped)

    def sample_sizes(self, catalog: Catalog) -> list[tuple[int, int]]:
        train = [i for i, p in enumerate(catalog.parts) if p == "train"]
        sizes = (image_size(self.root / catalog.names[train[i]]) for i in evenly_spaced(len(train), SAMPLE_SIZE))
        return [s for s in sizes if s is not None]

    def content_sha256(self, catalog: Catalog, progress: bool) -> str:
        """sha256 over the catalog's relative paths and bytes, in catalog order."""
        h = hashlib.sha256(b"smallnets folder v1\0")
        with Progress(f"hashing {self.root}", len(catalog), unit="files", enabled=progress) as bar:
            for name in catalog.names:
                try:
                    data = (self.root / name).read_bytes()
                except OSError as e:  # hashed as such; decoding will report the file as unreadable
                    data = f"unreadable: {e.strerror}".encode()
                h.update(name.encode("utf-8", "surrogateescape") + b"\0" + len(data).to_bytes(8, "little"))
                h.update(data)
                bar.update()
        return h.hexdigest()

    def read(self, names: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        for name in names:
            try:
                yield name, (self.root / name).read_bytes()
            except OSError as e:
                yield name, e

    def local_root(self, cache_root: Path, progress: bool) -> Path:
        return self.root


def walk_folder(root_path: Path, follow_links: bool, skipped: list[tuple[str, str, str]]) -> Iterator[tuple[str, int]]:
    """(relative posix name, size in bytes; -1 when stat fails) of every file of the tree at ``root_path``,
    hidden ones left out, with FolderSource's link policy (see its docstring); links not followed go to ``skipped``."""
    root = os.path.realpath(root_path)
    prefix = os.path.join(root, "")

    def listed(real: str) -> bool:  # a path of the tree that the walk lists under its own name
        if real != root and not real.startswith(prefix):
            return False
        return not is_junk(tuple(Path(os.path.relpath(real, root)).parts))

    # (path to list, its name relative to the root, real paths of it and the folders above it, reached through a link)
    stack: list[tuple[str, str, tuple[str, ...], bool]] = [(os.fspath(root_path), "", (root,), False)]
    while stack:
        path, rel_dir, ancestors, via_link = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((rel_dir or ".", skips.UNREADABLE, f"cannot list the folder: {e.strerror}"))
            continue
        folders = []
        for e in entries:
            if e.name.startswith("."):
                continue  # hidden: left out (as the catalog leaves out __MACOSX)
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                is_link, is_dir = e.is_symlink(), e.is_dir()  # is_dir follows links
            except OSError:
                is_link, is_dir = False, False
            real = os.path.realpath(e.path) if is_link else os.path.join(ancestors[-1], e.name)
            if (is_link or via_link) and os.path.exists(real):  # a broken link is listed: counted as unreadable
                why = None
                if is_dir and any(a == real or a.startswith(os.path.join(real, "")) for a in ancestors):  # it is in its target
                    why = skips.LINK_LOOP
                elif listed(real):
                    why = skips.LINK_LISTED
                elif is_link and not follow_links and real != root and not real.startswith(prefix):
                    why = skips.LINK_OUTSIDE
                if why is not None:
                    skipped.append((rel, why, f"-> {real}"))
                    continue
            if is_dir:
                folders.append((e.path, rel, (*ancestors, real), via_link or is_link))
                continue
            try:
                size = e.stat().st_size
            except OSError:
                size = -1  # a broken link, say: counted as unreadable
            yield rel, size
        stack.extend(reversed(folders))


def _safe_member_name(name: str) -> str | None:
    """The member's relative posix name without '.' parts; None for absolute names or ones with '..'."""
    if name.startswith("/"):
        return None
    parts = [x for x in name.split("/") if x and x != "."]
    if ".." in parts:
        return None
    return "/".join(parts) or None


def file_sha256(path: Path, progress: bool = False, desc: str | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, Progress(desc or f"hashing {path.name}", path.stat().st_size, unit="bytes", enabled=progress) as bar:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


class ArchiveSource:
    """A .tar / .tar.gz / .tgz of a class-folder tree; only regular files with safe relative names are read.

    An archive that cannot be read to its end-of-archive marker (cut short, garbled, not a tar) is a
    ValueError naming it, whichever step meets the damage: listing, sampling, decoding or extracting.
    """

    kind = "archive"
    KEEP_BYTES = 1 << 29  # while listing, keep up to 512 MiB of member bytes so that decoding needs no second pass

    def __init__(self, path: Path):
        self.path = path
        self._kept: dict[str, bytes] | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "bytes": self.path.stat().st_size}

    def members(self, bar: Progress | None = None) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str | None]]:
        """Every regular file member, with its safe name (None: unsafe); a truncated or corrupt archive is a ValueError.

        Read a member's bytes with ``member_bytes`` / ``_copy``, which report errors the same way: an error met
        while the caller reads a member is raised in the caller's frame, outside this generator.
        """
        ends: list[tarfile.HeaderError] = []

        class _Info(tarfile.TarInfo):  # records why the member list ended: tarfile ends it silently at
            @classmethod  # a header cut short or garbled (anything but the end-of-archive zero block)
            def fromtarfile(cls, tar):
                try:
                    return super().fromtarfile(tar)
                except tarfile.HeaderError as e:
                    ends.append(e)
                    raise

        seen, last = 0, None
        # Streaming mode: one forward pass, no seeks (a gzip stream cannot seek backwards cheaply).
        try:
            with open(self.path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*", tarinfo=_Info) as tar:
                for m in tar:
                    seen, last = seen + 1, m.name
                    if bar is not None:
                        bar.update(raw.tell() - bar.done)  # compressed bytes consumed so far
                    if m.isfile():
                        yield tar, m, _safe_member_name(m.name)
                if seen and ends and not isinstance(ends[-1], tarfile.EOFHeaderError):
                    raise tarfile.ReadError(f"the member list stops at a header cut short or garbled ({ends[-1]}), "
                                            f"not at the end-of-archive marker")  # fmt: skip
        except _ARCHIVE_ERRORS as e:
            raise self._unreadable(e, seen, last) from e

    def _unreadable(self, e: BaseException, seen: int, last: str | None) -> ValueError:
        why = f"{type(e).__name__}: {e}"
        if not seen:
            return ValueError(f"path {str(self.path)!r}: not a readable tar archive, or truncated or corrupt ({why})")
        return ValueError(f"path {str(self.path)!r}: the archive is truncated or corrupt: reading stopped after {seen} member(s), "
                          f"at {last!r} ({why}); download or pack it again")  # fmt: skip

    def member_bytes(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes | None:
        """A member's bytes (None: no data), read under the same error reporting as ``members``."""
        try:
            f = tar.extractfile(m)
            return f.read() if f is not None else None
        except _ARCHIVE_ERRORS as e:
            raise self._unreadable(e, len(tar.members), m.name) from e

    def _copy(self, tar: tarfile.TarFile, m: tarfile.TarInfo, out) -> None:
        """Copy a member into the binary file ``out`` in 1 MiB chunks (errors writing ``out`` stay OSErrors)."""
        src = tar.extractfile(m)
        while True:
            try:
                chunk = src.read(1 << 20) if src is not None else b""
            except _ARCHIVE_ERRORS as e:
                raise self._unreadable(e, len(tar.members), m.name) from e
            if not chunk:
                return
            out.write(chunk)

    def catalog(self, limit_per_class: int | None, progress: bool = False) -> Catalog:
        listing, unsafe = [], []
        kept: dict[str, bytes] | None = {}
        budget = self.KEEP_BYTES
        bar = Progress(f"reading {self.path.name}", self.path.stat().st_size, unit="bytes", enabled=progress)
        for tar, m, name in self.members(bar):
            if name is None:
                unsafe.append((m.name, skips.UNSAFE, ""))
                continue
            listing.append((name, m.size))
            if kept is not None and is_image_name(name):
                budget -= m.size
                if budget < 0:
                    kept = None  # too big to hold: ``read`` streams the archive again
                else:
                    kept[name] = self.member_bytes(tar, m) or b""
        bar.update(bar.total - bar.done)
        bar.close()
        self._kept = kept
        return catalog_from_listing(listing, str(self.path), limit_per_class=limit_per_class, pre_skipped=unsafe)

    def sample_sizes(self, catalog: Catalog | None = None) -> list[tuple[int, int]]:
        """Sizes of the first images in archive order (stops reading early: cheap even for big archives)."""
        sizes = []
        for tar, m, name in self.members():
            if name is None or not is_image_name(name) or is_junk(tuple(name.split("/"))):
                continue
            data = self.member_bytes(tar, m)
            size = image_size(data) if data is not None else None
            if size is not None:
                sizes.append(size)
            if len(sizes) >= SAMPLE_SIZE:
                break
        return sizes

    def content_sha256(self, catalog: Catalog | None, progress: bool) -> str:
        return file_sha256(self.path, progress, f"hashing {self.path.name}")

    def read(self, names: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """(name, bytes) for the wanted names (in archive order when streamed)."""
        if self._kept is not None and all(n in self._kept for n in names):
            kept, self._kept = self._kept, None  # hand the bytes over once, then free them
            yield from ((n, kept[n]) for n in names)
            return
        wanted = set(names)
        for tar, m, name in self.members():
            if name in wanted:
                data = self.member_bytes(tar, m)
                yield name, data if data is not None else OSError("no data")

    def local_root(self, cache_root: Path, progress: bool) -> Path:
        """Extract once for the loader path's random access; keyed by the archive's path, size and mtime."""
        st = self.path.stat()
        ident = f"{self.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
        dest = cache_root / "extracted" / (hashlib.sha256(ident).hexdigest()[:24] + "-" + self.path.name.split(".")[0])
        if (dest / ".complete").exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            with Progress(f"extracting {self.path.name}", None, unit="files", enabled=progress) as bar:
                for tar, m, name in self.members():
                    if name is None:
                        continue
                    target = tmp / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as out:
                        self._copy(tar, m, out)
                    bar.update()
            (tmp / ".complete").write_text(str(self.path.resolve()))
            if dest.exists():  # a half-finished dir from an interrupted run without the marker
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except OSError:
            if (dest / ".complete").exists():  # another process finished first
                return dest
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)
