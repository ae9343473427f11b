"""Downloads through pooch (retries, progress bar, archive extraction), verified against a lock file of digests.

The lock file (``config/checksums.lock``) holds one ``<digest>  <name>`` line per file; ``#`` lines are comments
(each digest's public source is stated above it). ``<digest>`` is

* the file's sha256 (64 hex digits): pooch checks every download against it and keeps nothing that differs;
* ``sha256-prefix:<hex>``: the published start of the sha256 (timm's file names end in one, torch.hub's
  convention); the first download must start with it, and its full sha256 then replaces the prefix;
* absent: *trust on first use*, for files whose digest nobody publishes: the digest of the first complete download
  is recorded, and every later download (on any machine) must match it.

A file already at the output path is not downloaded again if it matches its digest (pooch's cache semantics).
"""

from __future__ import annotations

import fcntl
import logging
import re
import tarfile
from contextlib import contextmanager
from pathlib import Path

from densepure.files.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PREFIX = "sha256-prefix:"
_DIGEST = re.compile(rf"^([0-9a-f]{{64}}|{PREFIX}[0-9a-f]{{6,63}})$")
CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed, or a file whose digest differs from the lock file; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def sha256(path: str | Path) -> str:
    """The sha256 of a file, as hex."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def read_lock(lock: str | Path) -> dict[str, str]:
    """name -> digest (sha256 hex, or ``sha256-prefix:<hex>``) from the lock file (a missing file: empty)."""
    lock = Path(lock)
    if not lock.exists():
        return {}
    entries = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _DIGEST.match(parts[0]):
            raise DownloadError(f"{lock}:{number}: expected '<sha256 or {PREFIX}hex>  <name>', got {line!r}")
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


def record_digest(lock: str | Path, name: str, digest: str) -> None:
    """Set ``name``'s digest in the lock file: its line is replaced (a prefix by the full digest) or appended;
    comments and the order of the other lines stay as they are."""
    lock = Path(lock)
    with _locked(lock):
        lines = lock.read_text().splitlines() if lock.exists() else [
            "# sha256 of downloaded files (densepure download): recorded on first download, enforced afterwards"]
        entry = f"{digest}  {name}"
        named = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#") and line.split()[1:] == [name]]
        if named:
            lines[named[0]] = entry
        else:
            lines.append(entry)
        atomic_write_text(lock, "\n".join(lines) + "\n")


@contextmanager
def _safe_extraction():
    """tarfile's ``data`` filter (no member outside the target folder, no links out of it, no devices) for the
    extraction: pooch passes it itself from Python 3.12 on; on 3.11 it is set as tarfile's default meanwhile."""
    saved = tarfile.TarFile.extraction_filter
    tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = saved


def download(url: str, out: str | Path, lock: str | Path, name: str | None = None, retries: int = 3,
             timeout: float = 60.0, progress: bool = True, extract_to: str | Path | None = None) -> str:
    """Download ``url`` to ``out`` with pooch, verified against ``lock`` (see the module docstring); returns the
    sha256. ``retries`` attempts in all (pooch waits 1, 2, ... s between them); ``name`` is the file's key in the
    lock file (default: the file name of ``out``); ``extract_to`` also unpacks the (tar) archive there."""
    import pooch
    import requests

    out, lock = Path(out), Path(lock)
    name = name or out.name
    recorded = read_lock(lock).get(name)
    known = None if recorded is None or recorded.startswith(PREFIX) else f"sha256:{recorded}"
    fetcher = pooch.create(path=out.parent, base_url="", registry={out.name: known}, urls={out.name: url},
                           retry_if_failed=retries - 1)
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout, chunk_size=CHUNK)
    processor = pooch.Untar(extract_dir=str(Path(extract_to).resolve())) if extract_to else None
    try:
        with _safe_extraction():
            fetcher.fetch(out.name, downloader=downloader, processor=processor)
    except requests.RequestException as err:
        raise DownloadError(f"download of {url} failed after {retries} attempts: {err}") from None
    except ValueError as err:  # pooch: the digest differs from the lock file's, after every attempt
        got = re.search(r"got ([0-9a-f]{64})", str(err))
        if got is None:
            raise DownloadError(f"{name}: {err}") from None
        raise DownloadError(f"{name}: sha256 {got.group(1)} does not match {recorded} in {lock} (all {retries} "
                            "attempts); nothing was kept") from None
    except tarfile.TarError as err:  # a member that would land outside extract_to, a corrupt archive
        raise DownloadError(f"{name}: cannot extract into {extract_to}: {err}") from None
    digest = sha256(out)
    if recorded is None or recorded.startswith(PREFIX):
        prefix = (recorded or PREFIX)[len(PREFIX):]
        if not digest.startswith(prefix):
            out.unlink()
            raise DownloadError(f"{name}: sha256 {digest} does not start with {prefix}, the published prefix in "
                                f"{lock}; the file was removed")
        record_digest(lock, name, digest)
        if progress:
            logger.info(f"{name}: sha256 {digest} recorded in {lock} (commit it)")
    return digest
