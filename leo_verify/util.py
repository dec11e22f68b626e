"""Small shared helpers: atomic writes, hashing."""
from __future__ import annotations

import hashlib
import os
import tempfile

__all__ = ["atomic_write_bytes", "atomic_write_text", "sha256_file", "sha256_bytes",
           "read_json", "read_model_bytes", "check_file_size", "folder_lock", "LOCK_NAME",
           "TIMING_KEYS", "strip_timing_fields"]


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it.

    The temporary file lives in the same folder (``os.replace`` is atomic only
    within one file system) and is removed if anything fails.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """sha256 of a file; an unreadable file is an :class:`InputFileError`."""
    import stat

    from .errors import InputFileError
    h = hashlib.sha256()
    try:
        # a FIFO or device (e.g. /dev/zero named in an edited report) would hang or never end
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputFileError(f"file {path!r} is not a regular file")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise InputFileError(f"file {path!r} cannot be read: {exc.strerror or exc}") from None
    return h.hexdigest()


def read_json(path: str, *, what: str, error):
    """Parse a JSON file the user named; every failure is one readable error.

    ``what`` names the file's role ("domain file", ...); ``error`` is the
    :class:`~leo_verify.errors.LeoError` class for content errors.  A missing
    or unreadable file is an :class:`~leo_verify.errors.InputFileError`.
    """
    import json

    from .errors import InputFileError
    if not os.path.exists(path):
        raise InputFileError(f"{what} {path!r} does not exist")
    if not os.path.isfile(path):
        raise InputFileError(f"{what} {path!r} is not a file")
    from .io import limits
    check_file_size(path, what=what, limit=limits.MAX_JSON_BYTES, name="MAX_JSON_BYTES",
                    error=error)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh, parse_int=_parse_json_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path!r}: not valid JSON ({exc})") from None
    except ValueError as exc:  # a limit of the decoder, e.g. Python's int digit limit
        raise error(f"{what} {path!r}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{what} {path!r}: JSON nested too deeply") from None
    except OSError as exc:
        raise InputFileError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None


def _parse_json_int(text: str):
    """JSON integers; one too long for Python's int() digit limit (4300 by default) is
    +-inf, which the callers' finiteness checks name, instead of a bare ValueError."""
    if len(text) > 4000:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


def check_file_size(path: str, *, what: str, limit: int, name: str, error) -> int:
    """The size of the regular file ``path``; refuse it (``error``) beyond ``limit`` bytes.

    ``name`` is the limit's name in :mod:`leo_verify.io.limits` (for the
    message).  A missing file or one that is not a regular file (a folder,
    a FIFO, a device such as ``/dev/zero``) is an
    :class:`~leo_verify.errors.InputFileError`.
    """
    import stat

    from .errors import InputFileError
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputFileError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{what} {path!r} is not a regular file")
    if st.st_size > limit:
        raise error(f"{what} {path!r} has {st.st_size} bytes, more than the limit of {limit} "
                    f"(leo_verify.io.limits.{name})")
    return st.st_size


def read_model_bytes(path: str, what: str = "model file") -> bytes:
    """The bytes of a model file, refused beyond ``leo_verify.io.limits.MAX_FILE_BYTES``.

    The size is checked before reading and at most limit + 1 bytes are read
    (a file growing meanwhile is refused too).  Missing / unreadable files:
    :class:`~leo_verify.errors.InputFileError`; too large:
    :class:`~leo_verify.errors.ModelFormatError`.
    """
    from .errors import InputFileError, ModelFormatError
    from .io import limits
    limit = limits.MAX_FILE_BYTES
    check_file_size(path, what=what, limit=limit, name="MAX_FILE_BYTES", error=ModelFormatError)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ModelFormatError(f"{what} {path!r} has more than {limit} bytes "
                               f"(leo_verify.io.limits.MAX_FILE_BYTES)")
    return data


#: the lock file :func:`folder_lock` takes inside a folder
LOCK_NAME = ".lock"


class folder_lock:
    """Hold an exclusive, non-blocking lock on ``folder/.lock`` (``fcntl.flock``).

    While held, the file contains the holder's pid.  A second holder fails at
    once with :class:`~leo_verify.errors.OutputError` naming the folder and
    the holder's pid.  The kernel releases the lock when the holder exits in
    any way (also SIGKILL), so a stale ``.lock`` file never blocks a later
    run.  On a normal exit (success, error, Ctrl-C) the holder removes the file
    *while still holding the lock*; a run that locked the file just before it
    was removed sees that the path no longer names the inode it locked and
    starts again, so two runs never hold two different lock files.  On a file
    system without locks (``ENOLCK``) the folder is used unlocked.
    """

    def __init__(self, folder: str, *, what: str = "output folder"):
        self.folder = folder
        self.what = what
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd = None

    def __enter__(self):
        import errno
        import fcntl

        from .errors import InputFileError, OutputError
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InputFileError(f"cannot write in {self.what} {self.folder!r}: "
                                     f"{exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                return self._busy(fd, exc, errno)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file we locked: lock the new one
        else:  # pragma: no cover - a hundred removals in a row
            raise OutputError(f"{self.what} {self.folder!r}: cannot take the lock {self.path!r}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        return self

    def _busy(self, fd, exc, errno):
        """The lock is taken (or locks are unsupported: use the folder unlocked)."""
        from .errors import OutputError
        if exc.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP):
            os.close(fd)
            return self
        try:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        os.close(fd)
        raise OutputError(f"{self.what} {self.folder!r} is in use by another leo-verify run "
                          f"(pid {holder}, lock {self.path!r}); wait for it to finish or "
                          f"choose another folder") from None

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                os.unlink(self.path)  # still locked: a waiting run re-checks the inode
            except OSError:
                pass
            os.close(self.fd)  # releases the lock
            self.fd = None
        return False


#: keys whose values are wall-clock durations (seconds) in facts, reports and
#: certificates: ``timings`` (facts ``meta``, report, report ``certificate``)
#: and ``time`` (each solver query in a fact's ``stats.queries``, each
#: obligation in a report / ``proofs/certificate.json``).  Everything else in
#: these files is a function of the inputs, the options (seed included) and
#: the tool versions.
TIMING_KEYS = frozenset({"timings", "time"})


def strip_timing_fields(obj, *, keys=TIMING_KEYS):
    """A copy of a JSON value without the timing fields (:data:`TIMING_KEYS`), at any depth."""
    if isinstance(obj, dict):
        return {k: strip_timing_fields(v, keys=keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [strip_timing_fields(v, keys=keys) for v in obj]
    return obj
