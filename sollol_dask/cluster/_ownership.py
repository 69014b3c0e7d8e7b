"""A run owns its output directory: one run at a time holds a lock in it, and the output
never overlaps the inputs.

The lock is the file ``_sollol.lock`` in dst, naming the holder (pid, host, start time,
run token). On a local filesystem it appears atomically with its content (written to a
private name, then hard-linked into place, which fails if a lock exists) and the holder
keeps an exclusive ``flock`` on it for the whole run. The kernel drops that flock when
the holder dies, however it dies, so "I got the flock, and the pid it names is gone from
this host" proves the lock stale; the taker replaces it by an atomic rename while holding
the old file's flock, so two takers cannot both win. On other filesystems (object
stores) and on Windows there is no atomic create here: the lock is checked then written,
which catches two runs started seconds apart but not a few milliseconds apart.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import posixpath
import socket

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._exceptions import ConfigurationError, OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the check-then-write lock is used there
    fcntl = None

logger = logging.getLogger(__name__)

LOCK = "_sollol.lock"


class RunLock:
    """The lock of one run in ``dst``: ``with RunLock.acquire(fs, dst, token): ...``."""

    def __init__(self, fs, path: str, token: str, fd: int | None) -> None:
        self.fs = fs
        self.path = path
        self.token = token
        self._fd = fd  # the flock-holding descriptor (local filesystems)

    @classmethod
    def acquire(cls, fs, dst: str, token: str) -> RunLock:
        """Take the lock of ``dst`` (which must exist), or raise ``OutputError`` naming the
        run that holds it. A lock left by a run that died on this host is taken over."""
        path = f"{dst}/{LOCK}"
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "process_start": _process_start(os.getpid())}
        data = json.dumps(holder).encode()
        if isinstance(fs, LocalFileSystem) and fcntl is not None:
            return cls(fs, path, token, _acquire_local(dst, path, token, data))
        _acquire_elsewhere(fs, dst, path, data)
        return cls(fs, path, token, None)

    def release(self) -> None:
        """Remove the lock if it is still ours; releasing twice is harmless."""
        if isinstance(self.fs, LocalFileSystem) and fcntl is not None and self._fd is None:
            return  # released already
        if self._fd is None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.fs.cat_file(self.path)).get("token") == self.token:
                    self.fs.rm(self.path)
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)  # before closing: nobody can flock it in between
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _acquire_local(dst: str, path: str, token: str, data: bytes) -> int:
    for _ in range(10):  # a retry only when the lock vanished or was replaced meanwhile
        fd, tmp = _private_lock_file(dst, token, data)
        owned = -1  # the descriptor handed to the caller, which then holds the flock
        try:
            owned = _place(fd, tmp, path, data)
            if owned >= 0:
                return owned
            stale = _stale_lock(path, dst)
            if stale is None:
                continue
            old_fd, old = stale
            try:
                os.rename(tmp, path)  # we hold the old file's flock: no one else can take it
            finally:
                os.close(old_fd)
            logger.warning("%s: taking over the lock of a run that is gone (pid %s on %s, started "
                           "%s); files it left unfinished are cleaned up", dst, old.get("pid"),
                           old.get("host"), old.get("started"))
            owned = fd
            return fd
        finally:
            if owned != fd:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    raise OutputError(f"cannot take the lock {path}: it keeps changing. Is another run "
                      "starting there? Wait for it, then rerun")


def _private_lock_file(dst: str, token: str, data: bytes) -> tuple[int, str]:
    """Our lock's content under a private name, flocked before anyone can see it."""
    tmp = f"{dst}/.{LOCK}.{token}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, tmp


def _place(fd: int, tmp: str, path: str, data: bytes) -> int:
    """Put our lock at ``path``: the descriptor now holding it, or -1 if a lock exists."""
    try:
        os.link(tmp, path)  # atomic, content included; fails if a lock exists
        return fd
    except FileExistsError:
        return -1
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    # No hard links on this filesystem (FAT, some network shares): create exclusively,
    # then write. A checker that looks in between sees no holder and refuses: safe.
    try:
        new = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return -1
    fcntl.flock(new, fcntl.LOCK_EX)  # blocking: a checker holds it for an instant at most
    os.write(new, data)
    return new


def _stale_lock(path: str, dst: str) -> tuple[int, dict] | None:
    """(descriptor holding its flock, holder) if the lock is stale; None if it vanished;
    ``OutputError`` naming the holder if it is alive."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the holder's process is alive and holds it
            raise OutputError(_in_use(dst, path, _read_holder(fd))) from None
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)
                return None  # released and re-taken meanwhile: look again
        except FileNotFoundError:
            os.close(fd)
            return None
        holder = _read_holder(fd)
        if not _gone(holder):
            raise OutputError(_in_use(dst, path, holder))
        return fd, holder
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _acquire_elsewhere(fs, dst: str, path: str, data: bytes) -> None:
    try:
        holder = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        holder = None
    except (OSError, ValueError):
        holder = {}
    if holder is not None:
        if not _gone(holder):
            raise OutputError(_in_use(dst, path, holder))
        logger.warning("%s: taking over the lock of a run that is gone (pid %s on %s, started %s)",
                       dst, holder.get("pid"), holder.get("host"), holder.get("started"))
    fs.pipe_file(path, data)


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096) or b"{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _gone(holder: dict) -> bool:
    """Whether the lock's run is certainly dead: only checkable for a pid on this host."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or os.name == "nt":
        return False  # (on Windows os.kill(pid, 0) would terminate the process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    # The pid exists: it is the lock's run only if it is no zombie and started at the
    # recorded moment (a long-lived host reuses pids).
    state = _process_state(pid)
    if state is None:
        return False
    return state[0] == "Z" or (holder.get("process_start") not in (None, state[1]))


def _process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of a process (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), fields[19].decode()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    state = _process_state(pid)
    return None if state is None else state[1]


def _in_use(dst: str, path: str, holder: dict) -> str:
    who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
           if holder else "holder unknown")
    return (f"{dst} is in use by another run ({who}): wait for it to finish or stop it, then "
            f"rerun. If no run is active there, delete {path}")


# -- dst never overlaps the inputs -----------------------------------------------------

def check_disjoint(src: str, dst: str, inputs: list[str] = ()) -> None:
    """``ConfigurationError`` if the output is, contains or lies inside an input: a run
    deletes and writes files in its output, and would read its own parts as input."""
    in_fs, src_path = fsspec.core.url_to_fs(str(src))
    out_fs, dst_path = fsspec.core.url_to_fs(str(dst))
    if _protocol(in_fs) != _protocol(out_fs):
        return
    root = _resolve(in_fs, _static_root(src_path))
    out = _resolve(out_fs, dst_path)
    if out == root:
        raise ConfigurationError(
            f"the output {dst} is the input {src}: choose an output directory outside the "
            "inputs (a run writes and deletes files in its output and would read its own parts "
            "as input)")
    if _inside(out, root):
        raise ConfigurationError(
            f"the output {dst} is inside the input {src}: a rerun would read the output as "
            f"input. Choose an output directory outside {src}")
    for path in (src_path, *inputs):
        if _inside(_resolve(in_fs, path), out) or _resolve(in_fs, path) == out:
            raise ConfigurationError(
                f"the input {src if path == src_path else path} is inside the output {dst}: "
                "choose an output directory that holds none of the inputs")


def _protocol(fs) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, (tuple, list)) else protocol


def _static_root(path: str) -> str:
    """The part of a glob before its first wildcard (a directory); a plain path as is."""
    cut = min((path.index(ch) for ch in "*?[" if ch in path), default=None)
    if cut is None:
        return path
    return path[:cut].rsplit("/", 1)[0] or "/"


def _resolve(fs, path: str) -> str:
    if isinstance(fs, LocalFileSystem):
        return os.path.realpath(path)
    return posixpath.normpath(path).rstrip("/") or "/"


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")
