"""Downloads through pooch with retries and the sha256 lock file (densepure.models.download, `densepure download`, the
workflow's download rules), against an HTTP server on 127.0.0.1 serving a temporary folder; and the committed lock
file config/checksums.lock. No other network is used."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pooch
import pytest
import yaml

from densepure.cli.main import main
from densepure.models import download as dl

REPO = Path(__file__).resolve().parents[1]


class Handler(BaseHTTPRequestHandler):
    """GET /<name> serves <root>/<name>. ``server.fail[name] = n``: the next n requests get HTTP 500;
    ``server.truncate[name] = n``: the next n responses announce 100 bytes more than they send, then close."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        name = self.path.lstrip("/")
        server.hits[name] += 1
        if server.fail[name] > 0:
            server.fail[name] -= 1
            self.send_error(500, "try again")
            return
        path = server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        short = server.truncate[name] > 0
        if short:
            server.truncate[name] -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) + (100 if short else 0)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.root, httpd.hits, httpd.fail, httpd.truncate = root, Counter(), Counter(), Counter()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """pooch waits 1, 2, ... s between attempts; the tests need not."""
    monkeypatch.setattr(pooch.core.time, "sleep", lambda seconds: None)


def serve(server, name: str, data: bytes) -> str:
    (server.root / name).write_bytes(data)
    return f"{server.url}/{name}"


def fetch(url: str, out: Path, lock: Path, **kwargs) -> str:
    return dl.download(url, out, lock, progress=False, timeout=10, **kwargs)


DATA = b"diffusion weights " * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


def test_first_download_records_the_digest(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    lock = tmp_path / "checksums.lock"
    assert fetch(url, tmp_path / "ckpt" / "model.pt", lock) == DIGEST
    assert (tmp_path / "ckpt" / "model.pt").read_bytes() == DATA
    assert dl.read_lock(lock) == {"model.pt": DIGEST}
    assert f"{DIGEST}  model.pt" in lock.read_text().splitlines()
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["model.pt"]  # no temporary file left


def test_second_download_is_verified(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    lock = tmp_path / "checksums.lock"
    fetch(url, tmp_path / "a" / "model.pt", lock)
    before = lock.read_text()
    assert fetch(url, tmp_path / "b" / "model.pt", lock) == DIGEST
    assert (tmp_path / "b" / "model.pt").read_bytes() == DATA
    assert lock.read_text() == before


def test_changed_file_fails_and_keeps_nothing(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    lock = tmp_path / "checksums.lock"
    fetch(url, tmp_path / "a" / "model.pt", lock)
    corrupt = DATA[:-1] + b"!"
    serve(server, "model.pt", corrupt)
    out = tmp_path / "b" / "model.pt"
    with pytest.raises(dl.DownloadError) as err:
        fetch(url, out, lock)
    message = str(err.value)
    assert message.startswith("model.pt: ") and "nothing was kept" in message and "\n" not in message
    assert DIGEST in message and hashlib.sha256(corrupt).hexdigest() in message
    assert server.hits["model.pt"] == 1 + 3  # every attempt failed the check
    assert not out.exists() and not list(out.parent.glob("*"))
    assert dl.read_lock(lock) == {"model.pt": DIGEST}
    # an earlier good copy at the output path is verified and kept, not downloaded again
    assert fetch(url, tmp_path / "a" / "model.pt", lock) == DIGEST
    assert (tmp_path / "a" / "model.pt").read_bytes() == DATA and server.hits["model.pt"] == 4


def test_a_damaged_local_copy_is_downloaded_again(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    lock = tmp_path / "lock"
    fetch(url, tmp_path / "model.pt", lock)
    (tmp_path / "model.pt").write_bytes(DATA[:100])
    assert fetch(url, tmp_path / "model.pt", lock) == DIGEST
    assert (tmp_path / "model.pt").read_bytes() == DATA and server.hits["model.pt"] == 2


def test_retries_after_a_server_error(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    server.fail["model.pt"] = 1
    assert fetch(url, tmp_path / "model.pt", tmp_path / "lock") == DIGEST
    assert server.hits["model.pt"] == 2
    assert (tmp_path / "model.pt").read_bytes() == DATA


def test_gives_up_after_the_last_attempt(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    server.fail["model.pt"] = 10
    with pytest.raises(dl.DownloadError, match="failed after 3 attempts"):
        fetch(url, tmp_path / "model.pt", tmp_path / "lock", retries=3)
    assert server.hits["model.pt"] == 3
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "lock").exists()


def test_truncated_response_is_retried(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    server.truncate["model.pt"] = 1
    assert fetch(url, tmp_path / "model.pt", tmp_path / "lock") == DIGEST
    assert server.hits["model.pt"] == 2
    assert (tmp_path / "model.pt").read_bytes() == DATA
    assert dl.read_lock(tmp_path / "lock") == {"model.pt": DIGEST}


def test_truncated_response_is_never_kept(server, tmp_path):
    url = serve(server, "model.pt", DATA)
    server.truncate["model.pt"] = 10
    with pytest.raises(dl.DownloadError, match="failed after 2 attempts.*IncompleteRead"):
        fetch(url, tmp_path / "model.pt", tmp_path / "lock", retries=2)
    assert server.hits["model.pt"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # neither the file nor a partial one
    assert dl.read_lock(tmp_path / "lock") == {}


def test_a_published_prefix_is_checked_then_completed(server, tmp_path):
    """timm's file names carry the start of their sha256: the first download must match it, then the full digest
    replaces the prefix; the lock file's comments stay."""
    url = serve(server, "net-abc.pth", DATA)
    lock = tmp_path / "lock"
    lock.write_text(f"# a comment\n{'0' * 64}  other.pt\nsha256-prefix:{DIGEST[:8]}  net-abc.pth\n")
    assert fetch(url, tmp_path / "net-abc.pth", lock) == DIGEST
    assert lock.read_text() == f"# a comment\n{'0' * 64}  other.pt\n{DIGEST}  net-abc.pth\n"
    lock.write_text("sha256-prefix:12345678  net-abc.pth\n")
    with pytest.raises(dl.DownloadError, match=f"{DIGEST} does not start with 12345678"):
        fetch(url, tmp_path / "b" / "net-abc.pth", lock)
    assert not (tmp_path / "b" / "net-abc.pth").exists()
    assert dl.read_lock(lock) == {"net-abc.pth": "sha256-prefix:12345678"}


def test_a_malformed_lock_line_is_named(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("# ok\nabc  model.pt\n")
    with pytest.raises(dl.DownloadError, match="lock:2: expected"):
        dl.read_lock(lock)


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cli_downloads_verifies_and_extracts(server, tmp_path):
    archive = _tarball({"cifar-10-batches-py/test_batch": b"batch", "cifar-10-batches-py/batches.meta": b"meta"})
    url = serve(server, "cifar-10-python.tar.gz", archive)
    lock, root = tmp_path / "checksums.lock", tmp_path / "data" / "cifar10"
    args = ["download", "--url", url, "--out", str(root / "cifar-10-python.tar.gz"), "--lock", str(lock),
            "--extract-to", str(root)]
    assert main(args) == 0
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == b"batch"
    assert dl.read_lock(lock) == {"cifar-10-python.tar.gz": hashlib.sha256(archive).hexdigest()}
    assert main(args) == 0  # verified against the lock file this time


def test_archive_members_outside_the_folder_are_refused(server, tmp_path):
    url = serve(server, "evil.tar.gz", _tarball({"data/ok": b"ok", "../escaped": b"x"}))
    root = tmp_path / "data" / "set"
    with pytest.raises(dl.DownloadError, match="evil.tar.gz: cannot extract"):
        dl.download(url, root / "evil.tar.gz", tmp_path / "lock", progress=False, extract_to=root)
    assert not (tmp_path / "data" / "escaped").exists()


def test_cli_reports_a_mismatch_in_one_line(server, tmp_path, capsys):
    url = serve(server, "weights.bin", DATA)
    lock = tmp_path / "lock"
    lock.write_text(f"{'0' * 64}  weights.bin\n")
    out = tmp_path / "ckpt" / "weights.bin"
    assert main(["download", "--url", url, "--out", str(out), "--lock", str(lock)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after pooch's progress lines, one error line
    assert err.startswith("densepure: error: weights.bin: ") and DIGEST in err and "0" * 64 in err
    assert not out.exists()


def test_cli_retries(server, tmp_path):
    url = serve(server, "weights.bin", DATA)
    server.fail["weights.bin"] = 2
    assert main(["download", "--url", url, "--out", str(tmp_path / "w.bin"), "--lock", str(tmp_path / "lock"),
                 "--name", "weights.bin", "--retries", "3"]) == 0
    assert server.hits["weights.bin"] == 3
    assert dl.read_lock(tmp_path / "lock") == {"weights.bin": DIGEST}


@pytest.mark.slow
def test_workflow_downloads_the_diffusion_checkpoint(server, tmp_path):
    """The download_diffusion rule of the workflow, for a config whose diffusion model has a URL on 127.0.0.1."""
    url = serve(server, "digits-unet.pt", DATA)
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, work / folder)
    config = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["checksums"] = "config/test.lock"
    config["diffusion_models"]["digits-unet"] = {"arch": "bundle", "file": "digits-unet.pt", "url": url}
    (work / "test.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([sys.executable, "-m", "snakemake", "checkpoints/digits-unet.pt", "--cores", "1",
                             "--configfile", "test.yaml", "--replace-workflow-config"], cwd=work, env=env, timeout=300,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "rule download_diffusion" in result.stdout
    assert (work / "checkpoints" / "digits-unet.pt").read_bytes() == DATA
    assert dl.read_lock(work / "config" / "test.lock") == {"digits-unet.pt": DIGEST}
    assert server.hits["digits-unet.pt"] == 1


# --- the committed lock file ------------------------------------------------------------------------------------

LOCK = REPO / "config" / "checksums.lock"
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def _paper_downloads() -> dict[str, str]:
    """File name (the lock file's key) -> URL of everything config/paper.yaml downloads."""
    files = {e["file"]: e["url"] for section in ("diffusion_models", "classifiers")
             for e in PAPER[section].values() if e.get("url")}
    for dataset in PAPER["datasets"].values():
        if dataset.get("download"):
            files[dataset["download"].rsplit("/", 1)[1]] = dataset["download"]
    return files


def test_every_download_has_a_digest_or_is_declared_trust_on_first_use():
    entries = dl.read_lock(LOCK)
    text = LOCK.read_text()
    tofu = text[text.index("# Trust on first use"):]
    for name in _paper_downloads():
        assert (name in entries) != (name in tofu), f"{name}: needs exactly one of a digest or a trust-on-first-use note"
    assert set(entries) <= set(_paper_downloads())
    assert {n for n, d in entries.items() if not d.startswith(dl.PREFIX)} == {"cifar-10-python.tar.gz",
                                                                             "256x256_diffusion_uncond.pt"}


def test_timm_prefixes_are_those_of_the_file_names():
    for name, digest in dl.read_lock(LOCK).items():
        if digest.startswith(dl.PREFIX):
            assert name.rsplit("-", 1)[1].split(".")[0] == digest[len(dl.PREFIX):], name


def test_the_hugging_face_url_is_pinned_to_a_commit():
    urls = [u for u in _paper_downloads().values() if "huggingface.co" in u]
    assert urls and all("/resolve/main/" not in u and "/resolve/63acc43/" in u for u in urls)
