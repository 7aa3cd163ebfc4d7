"""File-system helpers (public: companion packages use them too): atomic writes, checksums, cache dir, lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


def cache_dir() -> Path:
    """Root of the dataset cache: ``$OFFCOORD_DATA_DIR``, else the platform's user cache dir."""
    env = os.environ.get("OFFCOORD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "offcoord"


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class CorruptedFileError(RuntimeError):
    """A file is truncated, damaged or fails its checksum; the message names it and the command that repairs it."""

    def __init__(self, path: Path, problem: str, fix: str):
        super().__init__(f"{path} {problem}; {fix}")
        self.path, self.problem, self.fix = Path(path), problem, fix

    def __reduce__(self):  # crosses process pools and Ray intact
        return type(self), (self.path, self.problem, self.fix)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The temporary file (``.<name>.<pid>.*.tmp`` in the same directory) is removed on any error;
    temporaries left by a writer that was killed are removed by the next successful write.
    On a full disk the old file stays as it was and the ``OSError`` (ENOSPC) names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device to write {path} ({len(data):,} bytes); "
                                        f"{path.name} was left as it was: free some space and rerun") from e
        raise
    fsync_dir(path.parent)
    _remove_dead_temporaries(path)


def _remove_dead_temporaries(path: Path) -> None:
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isascii() and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (used to clean up after killed writers)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


CHECKSUM_KEY = "content_sha256"


def json_bytes(obj: Any) -> bytes:
    """The bytes :func:`atomic_write_json` writes for ``obj`` (sorted keys, indent 2, final newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write_json(path: Path, obj: Any, checksum: bool = False) -> None:
    """Atomically write ``obj`` as JSON; with ``checksum``, a ``content_sha256`` key holds the sha256
    of the rest, so :func:`read_json` detects any change of the content (a bit flip, a truncation)."""
    if checksum:  # a stale content_sha256 (a loaded file written back) is replaced, never hashed
        content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        obj = {**content, CHECKSUM_KEY: sha256_bytes(json_bytes(content))}
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: Path, fix: str, checksum: bool = False) -> Any:
    """Read a JSON file; a truncated or undecodable file (or, with ``checksum``, one whose content no
    longer matches its ``content_sha256``) raises :class:`CorruptedFileError` naming it and ``fix``."""
    path = Path(path)
    data = path.read_bytes()  # FileNotFoundError passes through: missing is not corrupted
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptedFileError(path, f"is truncated or corrupted (not valid JSON: {e})", fix) from None
    if checksum:
        if not isinstance(obj, dict) or not isinstance(obj.get(CHECKSUM_KEY), str):
            raise CorruptedFileError(path, f"is corrupted (no {CHECKSUM_KEY} field)", fix)
        expected = obj.pop(CHECKSUM_KEY)
        if sha256_bytes(json_bytes(obj)) != expected:
            raise CorruptedFileError(path, "does not match its checksum (corrupted or edited)", fix)
    return obj


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block (released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
