"""The on-disk trajectory store: one directory of ``.npy`` columns per stored copy.

Layout of ``<cache>/<card id>/``::

    manifest.json        format version, card hash, statistics, and per column: dtype, shape, bytes, sha256
    states.npy           (N, state_dim) float32    global state before the step
    next_states.npy      (N, state_dim) float32    global state after the step
    actions.npy          (N, joint_action_dim)     joint action (float32, or int64 for discrete agents)
    rewards.npy          (N,) float32              team reward
    terminations.npy     (N,) bool
    truncations.npy      (N,) bool
    episode_starts.npy   (E,) int64                index of each episode's first transition
    extra_<name>.npy     (N,) ...                  per-transition behavior facts (e.g. the expert's strategy)

Writes go to a hidden temporary directory next to the target, which is renamed into place only
once every column and the manifest are complete and synced, so a reader never sees half a dataset.
Loading checks every file's size against the manifest (a truncated file is caught at once) and,
the first time it sees the files or whenever their size or mtime changed, their sha256.

Every column's disk space is reserved up front (``posix_fallocate``): on a full disk the build
fails at once with a clear ``OSError`` (ENOSPC) instead of a SIGBUS when a memory-mapped page is
written back, and the temporary directory is removed, so the cache stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from offcoord.fileio import atomic_write_json, fsync_dir, pid_alive, sha256_file
from offcoord.errors import DatasetCorruptedError

STORE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAMP = ".verified.json"  # sizes/mtimes of files whose checksums were last verified
CORE_COLUMNS = ("states", "next_states", "actions", "rewards", "terminations", "truncations", "episode_starts")


def rebuild_hint(card_id: str) -> str:
    return f"rebuild it with: offcoord generate {card_id} --force"


class StoreWriter:
    """Allocates memory-mapped columns in a temporary directory and publishes them atomically.

    Use as a context manager: leaving the block with an exception deletes the temporary directory.
    """

    def __init__(self, target: Path, columns: Mapping[str, tuple[tuple[int, ...], Any]]):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.parent / f".tmp-{self.target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.arrays: dict[str, np.memmap] = {}
        try:
            for name, (shape, dtype) in columns.items():
                self.arrays[name] = self._allocate(name, shape, dtype)
        except BaseException as e:
            self.__exit__(type(e), e, None)  # raises the ENOSPC explanation, or returns
            raise

    def _allocate(self, name: str, shape, dtype) -> np.memmap:
        arr = np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        reserve_space(self.tmp / f"{name}.npy")
        return arr

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.arrays.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not getattr(exc, "_offcoord_explained", False):
                err = OSError(errno.ENOSPC, f"no space left on the device holding {self.target.parent} while building "
                                            f"{self.target.name}; the build was abandoned and the cache left as it was "
                                            f"(free some space or point $OFFCOORD_DATA_DIR elsewhere, then rerun: "
                                            f"offcoord generate {self.target.name})")
                err._offcoord_explained = True
                raise err from exc

    def truncate(self, name: str, length: int) -> None:
        """Shrink a column to its first ``length`` rows (episode_starts is sized by an upper bound)."""
        arr = self.arrays.pop(name)
        kept = np.array(arr[:length])
        del arr
        os.unlink(self.tmp / f"{name}.npy")
        out = self._allocate(name, kept.shape, kept.dtype)
        out[:] = kept
        self.arrays[name] = out

    def commit(self, manifest_extra: Mapping[str, Any]) -> Path:
        """Flush, checksum, write the manifest, then rename the directory into place (replacing any old copy)."""
        columns = {}
        for name, arr in self.arrays.items():
            arr.flush()
            shape, dtype = arr.shape, arr.dtype.str
            path = self.tmp / f"{name}.npy"
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            columns[name] = {"shape": list(shape), "dtype": dtype, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        self.arrays.clear()
        manifest = {"store_format_version": STORE_FORMAT_VERSION, "columns": columns, **manifest_extra}
        atomic_write_json(self.tmp / MANIFEST, manifest)
        _write_stamp(self.tmp, columns)
        fsync_dir(self.tmp)
        old = None
        if self.target.exists():
            old = self.target.parent / f".old-{self.target.name}-{uuid.uuid4().hex[:8]}"
            os.rename(self.target, old)
        os.rename(self.tmp, self.target)
        fsync_dir(self.target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target


def reserve_space(path: Path) -> None:
    """Allocate the blocks of a (sparse) file now, so a full disk raises ENOSPC here and not SIGBUS later."""
    if not hasattr(os, "posix_fallocate"):
        return
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # file systems without it: skip
            raise
    finally:
        os.close(fd)


def _file_signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _write_stamp(directory: Path, columns: Mapping[str, Any]) -> None:
    stamp = {name: _file_signature(directory / f"{name}.npy") for name in columns}
    with contextlib.suppress(OSError):  # a read-only cache still loads, just re-verifies each time
        atomic_write_json(directory / STAMP, stamp)


def read_manifest(directory: Path, card_id: str) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetCorruptedError(f"{path} is missing; {rebuild_hint(card_id)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetCorruptedError(f"{path} is corrupted ({e}); {rebuild_hint(card_id)}") from None
    if not isinstance(manifest, dict) or manifest.get("store_format_version") != STORE_FORMAT_VERSION:
        raise DatasetCorruptedError(
            f"{path} has store format {manifest.get('store_format_version') if isinstance(manifest, dict) else '?'}, "
            f"this offcoord reads {STORE_FORMAT_VERSION}; {rebuild_hint(card_id)}"
        )
    columns = manifest.get("columns")
    if not isinstance(columns, dict) or not all(
        isinstance(c, dict) and {"shape", "dtype", "bytes", "sha256"} <= set(c) for c in columns.values()
    ):
        raise DatasetCorruptedError(f"{path} lacks a valid column table; {rebuild_hint(card_id)}")
    return manifest


def verify_store(directory: Path, card_id: str, manifest: Mapping[str, Any], full: bool = False) -> None:
    """Check sizes always; checksums when ``full`` or when a file changed since its last verification."""
    directory = Path(directory)
    try:
        stamp = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    need_stamp = False
    for name, meta in manifest["columns"].items():
        path = directory / f"{name}.npy"
        if not path.exists():
            raise DatasetCorruptedError(f"{path} is missing; {rebuild_hint(card_id)}")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise DatasetCorruptedError(
                f"{path} is truncated or overwritten ({size} bytes, manifest says {meta['bytes']}); {rebuild_hint(card_id)}"
            )
        if full or stamp.get(name) != _file_signature(path):
            if sha256_file(path) != meta["sha256"]:
                raise DatasetCorruptedError(f"{path} does not match its checksum (corrupted); {rebuild_hint(card_id)}")
            need_stamp = True
    if need_stamp:
        _write_stamp(directory, manifest["columns"])


def open_columns(directory: Path, card_id: str, manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Memory-map every column read-only, checking dtype and shape against the manifest."""
    arrays = {}
    for name, meta in manifest["columns"].items():
        path = Path(directory) / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise DatasetCorruptedError(f"{path} cannot be read ({e}); {rebuild_hint(card_id)}") from None
        if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"]:
            raise DatasetCorruptedError(
                f"{path} has shape {arr.shape} dtype {arr.dtype.str}, manifest says {meta['shape']} {meta['dtype']}; "
                f"{rebuild_hint(card_id)}"
            )
        arrays[name] = arr
    return arrays


def remove_stale_temporaries(root: Path, name: str) -> None:
    """Clean up after a generator of ``name`` that died: delete its temporary directories (their
    pid no longer runs) and put back an old copy a replacement had moved aside. Call it holding
    ``name``'s build lock (other stores' builds may be under way)."""
    if not root.exists():
        return
    for tmp in root.glob(f".tmp-{name}-*"):
        parts = tmp.name.rsplit("-", 2)
        if parts[0] != f".tmp-{name}":  # another store whose name starts with this one's
            continue
        try:
            pid = int(parts[-2])
        except (ValueError, IndexError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in root.glob(f".old-{name}-*"):
        if old.name.rsplit("-", 1)[0] != f".old-{name}":
            continue
        target = root / name
        if not target.exists():  # a replacement died between its two renames: the old copy is still whole
            os.rename(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
