"""Downloads with retries and sha256 verification against a lock file kept in the repository.

The lock file holds one line per file: ``<sha256>  <name>``. A name without a digest is *trusted on first use*:
the digest of the first complete download is recorded, and every later download (on any machine) must match it.
A mismatch keeps nothing: the partial or wrong file is deleted and the error names the file and both digests.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed or a file whose digest differs from the lock file."""


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock(lock: Path) -> dict[str, str]:
    """name -> sha256 from the lock file (missing file: empty)."""
    if not lock.exists():
        return {}
    entries = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DownloadError(f"{lock}:{number}: expected '<sha256>  <name>', got {line!r}")
        entries[parts[1]] = parts[0]
    return entries


@contextmanager
def _locked(lock: Path):
    """Exclusive lock on ``<lock>.flock`` so parallel download jobs update the lock file one at a time."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock.with_name(lock.name + ".flock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_digest(lock: Path, name: str, digest: str) -> None:
    """Add ``name``'s digest to the lock file (kept sorted by name)."""
    with _locked(lock):
        entries = read_lock(lock)
        entries[name] = digest
        lines = [f"{entries[key]}  {key}" for key in sorted(entries)]
        tmp = lock.with_name(lock.name + ".tmp")
        tmp.write_text("# sha256 of every downloaded file, filled on first download and enforced afterwards\n"
                       + "\n".join(lines) + "\n")
        tmp.replace(lock)


def _fetch(url: str, target: Path, timeout: float, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as handle:
        total = int(response.headers.get("Content-Length") or 0)
        done, last = 0, 0.0
        for chunk in iter(lambda: response.read(CHUNK), b""):
            handle.write(chunk)
            done += len(chunk)
            if progress and time.monotonic() - last > 1:
                last = time.monotonic()
                share = f" ({100 * done / total:.0f}%)" if total else ""
                sys.stderr.write(f"\r{target.name}: {done / 1e6:,.1f} MB{share}   ")
        if total and done != total:
            raise urllib.error.URLError(f"connection closed after {done} of {total} bytes")
    if progress:
        sys.stderr.write("\n")


def download(url: str, out: str | Path, lock: str | Path, name: str | None = None, retries: int = 3,
             timeout: float = 60.0, backoff: float = 2.0, progress: bool = True) -> str:
    """Download ``url`` to ``out`` (atomically) and verify it against ``lock``; returns the sha256.

    Retries ``retries`` times with exponential backoff on network errors. ``name`` is the file's key in the lock
    file (default: the file name of ``out``).
    """
    out, lock = Path(out), Path(lock)
    name = name or out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, partial, timeout, progress)
            break
        except (urllib.error.URLError, OSError) as err:
            partial.unlink(missing_ok=True)
            if attempt == retries:
                raise DownloadError(f"download of {url} failed after {retries} attempts: {err}") from None
            sys.stderr.write(f"{name}: attempt {attempt} failed ({err}); retrying\n")
            time.sleep(backoff * 2 ** (attempt - 1))
    digest = sha256(partial)
    expected = read_lock(lock).get(name)
    if expected is not None and expected != digest:
        partial.unlink()
        raise DownloadError(f"{name}: sha256 {digest} does not match {expected} in {lock}; nothing was kept")
    if expected is None:
        record_digest(lock, name, digest)
    os.replace(partial, out)
    return digest


def extract_tar(archive: str | Path, dest: str | Path) -> None:
    """Extract a .tar(.gz) archive into ``dest`` (refusing members that would land outside it)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except tarfile.ReadError:
        raise DownloadError(f"cannot extract {archive}: not a tar archive (plain, gzip, bzip2 or xz), or truncated") \
            from None
    except tarfile.TarError as err:  # e.g. a member that would land outside dest
        raise DownloadError(f"cannot extract {archive}: {' '.join(str(err).split())}") from None
