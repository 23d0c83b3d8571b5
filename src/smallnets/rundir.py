"""The run directory: its file names, who owns it (a lock), what the trainer writes there and how a
past run is read back by eval, predict, convert, the CLI and ``--resume``.

    config.json          the resolved configuration (what was asked, after defaults)
    run.json             status (running / finished / interrupted / diverged / time budget), environment
    split.json           the validation split (seed, fraction, per-class counts, val files)
    shards.json          which training images each process saw in the first epoch
    metrics.jsonl/.csv   one record per epoch
    curves.png           learning curves
    last.safetensors     deployable weights (the EMA weights when EMA is on) + last.json sidecar
    best.safetensors     the weights of the best validation top-1 so far + best.json
    state.safetensors    trainer state: raw weights, optimizer, EMA, grad scaler, RNG of every
                         rank and the position (epoch, batch); no pickle anywhere
    .lock                while a process trains (or resumes) the run: one owner at a time
    confusion.png        written by ``smallnets eval RUN``

Every file is written atomically (a temporary file renamed over the target). The lock is the
kernel's (``flock``; ``msvcrt.locking`` on Windows), so it ends with the process that holds it,
however that process ends: a run killed with SIGKILL leaves no lock to break, only the file, which
the next claim reuses. The file holds the owner's pid and host for the message a second claimant
gets.

This module sits below the trainer and evaluation alike (it imports neither, nor the checkpoint
format), so that everything that reads a run reads it the same way.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import sys
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallnets._io import atomic_write_text

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CONFIG = "config.json"
RUN_INFO = "run.json"
SPLIT = "split.json"
SHARDS = "shards.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES = "curves.png"
STATE = "state.safetensors"
BEST = "best.safetensors"
LAST = "last.safetensors"
LOCK = ".lock"
CONFUSION = "confusion.png"
WEIGHTS = (BEST, LAST)  # what a run directory is searched for, in order (checkpoint.resolve_weights)

METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
    "images_per_s", "epoch_s", "elapsed_s", "wall_s",
)  # fmt: skip

# what smallnets._io.atomic_path leaves behind when its process dies mid-write: .NAME.XXXXXXXX.tmp.SUFFIX
TEMP_FILE = re.compile(r"^\..+\.tmp(\.[^.]+)?$")


class RunDirectoryInUse(FileExistsError):
    """Another live process has claimed the run directory."""


# --- the lock -------------------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _release(fd: int, path: Path) -> None:
    # removed while still locked, so that no one can lock the old file after it is gone (see claim)
    try:
        path.unlink()
    except OSError:
        pass
    os.close(fd)


class RunLock:
    """The claim on one run directory; ``release()`` (or the end of the process) gives it up."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self.path = run_dir / LOCK
        self._finalizer = weakref.finalize(self, _release, fd, self.path)

    @property
    def held(self) -> bool:
        return self._finalizer.alive

    def release(self) -> None:
        self._finalizer()

    @classmethod
    def claim(cls, run_dir: str | os.PathLike) -> RunLock:
        """Lock ``run_dir`` (which must exist) or raise :class:`RunDirectoryInUse` naming the owner."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                raise RunDirectoryInUse(f"run directory {str(run_dir)!r} is in use by {describe_owner(run_dir)}; "
                                        f"wait for it to end, or choose another --name")  # fmt: skip
            # the previous owner may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else sees; try again with the one that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": _dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        return cls(run_dir, fd)


def describe_owner(run_dir: str | os.PathLike) -> str:
    try:
        owner = json.loads((Path(run_dir) / LOCK).read_text())
        return f"process {owner['pid']} on {owner['host']} (since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def remove_temp_files(run_dir: str | os.PathLike) -> list[str]:
    """Delete the unfinished temporary files a killed writer left in ``run_dir``; their names.

    Only call this while holding the directory's lock: then no writer is alive to own them.
    """
    removed = []
    for p in sorted(Path(run_dir).iterdir()):
        if TEMP_FILE.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def metrics_csv(history: list[dict[str, Any]]) -> str:
    """metrics.csv: one row per epoch record, METRIC_COLUMNS in order, floats to 6 significant digits."""
    rows = [",".join(METRIC_COLUMNS)]
    for r in history:
        rows.append(",".join("" if r.get(c) is None else f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in METRIC_COLUMNS))
    return "\n".join(rows) + "\n"


# --- the directory --------------------------------------------------------------------------------


class RunDir:
    """One run directory: ``RunDir(path).config`` is its config.json path, ``.claim()`` locks it,
    ``.write_*`` write its files atomically and ``.read_*`` read them back."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock: RunLock | None = None
        self._created: list[Path] = []  # folders made by create(): removed again by abandon()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / CONFIG)
    run_info = property(lambda self: self.path / RUN_INFO)
    split = property(lambda self: self.path / SPLIT)
    shards = property(lambda self: self.path / SHARDS)
    metrics_jsonl = property(lambda self: self.path / METRICS_JSONL)
    metrics_csv = property(lambda self: self.path / METRICS_CSV)
    curves = property(lambda self: self.path / CURVES)
    state = property(lambda self: self.path / STATE)
    best = property(lambda self: self.path / BEST)
    last = property(lambda self: self.path / LAST)
    lock_file = property(lambda self: self.path / LOCK)
    confusion = property(lambda self: self.path / CONFUSION)

    def weights(self) -> Path | None:
        """The deployable weights a reader takes: best.safetensors, else last.safetensors; None without either."""
        return next((self.path / n for n in WEIGHTS if (self.path / n).is_file()), None)

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a folder holding a trainer's config.json."""
        return (Path(path) / CONFIG).is_file()

    # --- owning it ------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.held

    @classmethod
    def create(cls, path: str | os.PathLike | None = None, *, out: str | os.PathLike = "runs", name: str | None = None,
               prefix: str = "run") -> RunDir:  # fmt: skip
        """Make and claim a new run directory: ``path``, else ``out/name``, else ``out/PREFIX-YYYYmmdd-HHMMSS``.

        An automatic name is claimed by creating the folder (two runs started in the same second get
        two directories); a given one must not hold a run yet. The folders made here are removed
        again by :meth:`abandon` (a failed start), until :meth:`keep` says the directory is a run.
        """
        run = cls(out if path is None else path)
        try:
            if path is None and name is None:
                base = Path(out) / f"{prefix}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
                run._make_dirs(base.parent)
                candidate, i = base, 1
                while True:
                    try:
                        candidate.mkdir()
                        run._created.append(candidate)
                        break
                    except FileExistsError:
                        candidate, i = base.with_name(f"{base.name}-{i}"), i + 1
                run.path = candidate
            else:
                run.path = Path(path) if path is not None else Path(out) / name
                run._make_dirs(run.path)
            run._lock = RunLock.claim(run.path)
            if run.state.exists():
                raise FileExistsError(f"run directory {str(run.path)!r} already holds a run; use --resume {run.path} or another --name")
        except BaseException:
            run.abandon()
            raise
        return run

    def claim(self) -> RunDir:
        """Lock this existing run directory (a resume, or a second ``fit()``) or raise :class:`RunDirectoryInUse`."""
        if not self.held:
            self._lock = RunLock.claim(self.path)
        return self

    def tidy_after_previous_session(self) -> dict | None:
        """A resume holds the lock, so no earlier session is alive: its unfinished temporary files are
        debris, and a run.json still saying 'running' means that session was killed (or crashed).
        Returns run.json's ``previous_session`` record for a killed session, else None."""
        assert self.held, "tidy only a run directory this process has claimed"
        removed = remove_temp_files(self.path)
        info = self.read_run_info() or {}
        if info.get("status") == "running":
            pid = f" (pid {info['pid']})" if info.get("pid") is not None else ""
            warnings.warn(f"the previous session of this run{pid} was killed: its run.json still said 'running' (last update "
                          f"{info.get('updated')}); continuing from its last checkpoint; removed {len(removed)} unfinished "
                          f"temporary file(s)", stacklevel=_caller_level())  # fmt: skip
            return {"status": "killed", "pid": info.get("pid"), "last_update": info.get("updated"),
                    "epoch": info.get("epoch"), "batch": info.get("batch"), "temp_files_removed": removed}  # fmt: skip
        if removed:
            warnings.warn(f"removed {len(removed)} unfinished temporary file(s) from {self.path}: {', '.join(removed)}", stacklevel=_caller_level())
        return None

    def keep(self) -> None:
        """The directory is a run now: kept whatever happens next (abandon() only unlocks it)."""
        self._created = []

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def abandon(self) -> None:
        """Give the directory up after a failed start: the lock, and the folders create() made if still empty."""
        self.release()
        for d in sorted(set(self._created), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty (or not ours any more): leave it
        self._created = []

    def _make_dirs(self, path: Path) -> None:
        """``mkdir -p path``, remembering which folders were created."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        self._created.extend(missing)

    # --- writing --------------------------------------------------------------------------------

    def write_json(self, name: str, obj: Any, *, indent: int | None = 2) -> Path:
        path = self.path / name
        atomic_write_text(path, json.dumps(obj, indent=indent))
        return path

    def write_config(self, config: dict) -> Path:
        return self.write_json(CONFIG, config)

    def write_split(self, split: dict) -> Path:
        return self.write_json(SPLIT, split)

    def write_shards(self, shards: dict) -> Path:
        return self.write_json(SHARDS, shards, indent=None)

    def write_run_info(self, info: dict) -> Path:
        return self.write_json(RUN_INFO, info)

    def update_run_info(self, **fields: Any) -> Path:
        """run.json with ``fields`` added (or replaced), the rest as it was."""
        return self.write_run_info({**(self.read_run_info() or {}), **fields})

    def write_metrics(self, history: list[dict[str, Any]], *, title: str) -> None:
        """metrics.jsonl, metrics.csv and curves.png from the epoch records (a plotting failure only warns)."""
        atomic_write_text(self.metrics_jsonl, "".join(json.dumps(r) + "\n" for r in history))
        atomic_write_text(self.metrics_csv, metrics_csv(history))
        try:
            from smallnets.plots import plot_learning_curves

            plot_learning_curves(history, self.curves, title=title)
        except Exception as exc:  # a plotting problem must never end a training run
            print(f"warning: could not draw {CURVES}: {exc}", file=sys.stderr)

    # --- reading back ---------------------------------------------------------------------------

    def read_run_info(self) -> dict | None:
        """run.json, or None when it is missing or unreadable (a run killed before writing it)."""
        try:
            info = json.loads(self.run_info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def read_split(self) -> dict | None:
        """split.json, or None when the run has none."""
        return json.loads(self.split.read_text(encoding="utf-8")) if self.split.is_file() else None

    def read_config_dict(self) -> dict:
        """config.json as written (sections model, data, train, resolved)."""
        if not self.config.is_file():
            raise FileNotFoundError(f"run directory {str(self.path)!r} has no {CONFIG}")
        try:
            raw = json.loads(self.config.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"run config {str(self.config)!r} is not valid JSON: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"run config {str(self.config)!r} must hold a mapping with sections model, data, train; got {type(raw).__name__}")
        return raw

    def read_config(self, **train_overrides: Any):
        """config.json as a RunConfig (``train_overrides`` replace [train] values before it is checked)."""
        from smallnets.training.config import RunConfig

        raw = self.read_config_dict()
        if train_overrides:
            raw["train"] = {**(raw.get("train") or {}), **train_overrides}
        return RunConfig.from_dict(raw, where=str(self.config))

    def read_back(self) -> PastRun:
        """What the run records about how its model was trained and validated."""
        raw = self.read_config_dict()
        from smallnets.training.config import RunConfig

        config = RunConfig.from_dict(raw, where=str(self.config))
        return PastRun(self.path, config, dict(raw.get("resolved") or {}), self.read_split())


@dataclass
class PastRun:
    """What a run directory records about how its model was trained and validated."""

    dir: Path
    config: Any  # RunConfig
    resolved: dict  # config.json's "resolved": lr, precision, classes, ...
    split: dict | None  # split.json, when present

    @property
    def run(self) -> RunDir:
        return RunDir(self.dir)

    def trained_on(self, data: str | os.PathLike) -> bool:
        """Whether ``data`` names the source the run was trained on (the same folder, archive or CIFAR name)."""
        from smallnets.data.cifar import CIFAR

        data, recorded = os.fspath(data), os.fspath(self.config.data.path)
        if recorded in CIFAR or data in CIFAR:
            return data == recorded
        here = Path(data).expanduser().resolve()
        source = ((self.split or {}).get("source") or {}).get("path")
        # split.json holds the resolved path; config.json the path as typed (relative to where training ran)
        return here == Path(source) if source else here == Path(recorded).expanduser().resolve()

    def recorded_val_files(self) -> list[str] | str | None:
        """The validation files split.json lists, else only their sha256 (older runs), else None."""
        split = self.split or {}
        return split.get("val_files") if isinstance(split.get("val_files"), list) else split.get("val_files_sha256")

    def check_split(self, bundle) -> SplitCheck:
        """Whether ``bundle`` (data rebuilt with this run's DataConfig) validates on the files of this run's
        split.json, by name and by content (each file's sha256, where split.json records it)."""
        recorded = self.recorded_val_files()
        if recorded is None:
            return SplitCheck(None, None, [])
        if isinstance(recorded, str):
            same_names = recorded == bundle.split.get("val_files_sha256")
        else:
            same_names = _without_top_folder(recorded) == _without_top_folder(bundle.val_files())
        if not same_names:
            return SplitCheck(False, None, ["the validation files differ from the run's split.json (different data): this is a new split"])
        same_content, changed = _content_check(self.split or {}, bundle)
        if same_content is None:
            return SplitCheck(True, None, ["the run's split.json records the validation files' names but not their content "
                                           "(an older run): their content cannot be checked"])  # fmt: skip
        if same_content:
            return SplitCheck(True, [], [])
        n = len(bundle.val_files())
        note = (
            f"{len(changed)} of the {n} validation files changed since the run (the same names, other bytes than "
            f"split.json records): {', '.join(changed[:10])}{', ...' if len(changed) > 10 else ''}"
            if changed else "the data's checksum differs from the run's: its validation samples changed since the run"
        )
        return SplitCheck(False, changed, [note])


@dataclass(frozen=True)
class SplitCheck:
    """How a rebuilt validation split compares with the run's split.json."""

    matches: bool | None  # None: split.json records no files to compare with
    changed: list[str] | None  # same names, other bytes: those files; None when content was not compared
    notes: list[str]  # what a report should say about it


def _without_top_folder(names: list[str]) -> list[str]:
    """Names with one folder shared by all of them removed (an archive's top-level folder)."""
    firsts = {n.split("/", 1)[0] for n in names}
    if len(firsts) == 1 and all(n.count("/") >= 2 for n in names):
        return [n.split("/", 1)[1] for n in names]
    return list(names)


def _content_check(split: dict, bundle) -> tuple[bool | None, list[str]]:
    """Whether the validation files hold the bytes split.json recorded, and the names of those that do
    not; (None, []) when the record has no file contents (split.json from before they were kept)."""
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


def find_run(weights: str | os.PathLike, given: str | os.PathLike) -> PastRun | None:
    """The run that the weights file ``weights`` belongs to: ``given`` when it is a run directory, else
    the weights' own folder when it holds a trainer's config.json (some other tool's config.json
    beside a weights file is no run: None)."""
    given, weights = Path(given), Path(weights)
    run = RunDir(given if given.is_dir() else weights.parent)
    if not run.config.is_file():
        return None
    if not given.is_dir():
        try:
            raw = run.read_config_dict()
        except ValueError:
            return None
        if not ("resolved" in raw and "data" in raw):
            return None
    return run.read_back()


def _caller_level() -> int:
    """The stacklevel that points a warning at the first frame outside smallnets (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("smallnets"):
        frame, level = frame.f_back, level + 1
    return level
