"""Small shared helpers: atomic writes, hashing."""
from __future__ import annotations

import hashlib
import os
import tempfile

__all__ = ["atomic_write_bytes", "atomic_write_text", "sha256_file", "sha256_bytes"]


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
    from .errors import InputFileError
    h = hashlib.sha256()
    try:
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
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path!r}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{what} {path!r}: JSON nested too deeply") from None
    except OSError as exc:
        raise InputFileError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None
