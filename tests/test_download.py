"""download.py against a local HTTP server serving archives built here; no internet."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from rlchat import download
from rlchat.download import (
    CORPUS_FILES,
    CorpusNotFoundError,
    CorpusShape,
    DownloadError,
    download_corpus,
    resolve_corpus_dir,
    verify_corpus_shape,
)

FOLDER = "cornell movie-dialogs corpus/"
SEP = " +++$+++ "
# A few records in the real format; the trailing blank lines must not count as records.
CORPUS_TEXT = {
    "movie_titles_metadata.txt": [
        SEP.join(["m0", "10 things i hate about you", "1999", "6.90", "62847", "['comedy']"]),
        SEP.join(["m1", "amélie", "2001", "8.40", "120000", "['romance']"]),
    ],
    "movie_characters_metadata.txt": [
        SEP.join(["u0", "BIANCA", "m0", "10 things i hate about you", "f", "4"]),
        SEP.join(["u2", "CAMERON", "m0", "10 things i hate about you", "m", "3"]),
        SEP.join(["u9", "AMÉLIE", "m1", "amélie", "f", "1"]),
    ],
    "movie_lines.txt": [
        SEP.join(["L1045", "u0", "m0", "BIANCA", "They do not!"]),
        SEP.join(["L1044", "u2", "m0", "CAMERON", "They do to!"]),
        SEP.join(["L985", "u0", "m0", "BIANCA", "I hope so."]),
        SEP.join(["L984", "u2", "m0", "CAMERON", "She okay?"]),
        SEP.join(["L90", "u9", "m1", "AMÉLIE", "Déjà vu."]),
    ],
    "movie_conversations.txt": [
        SEP.join(["u0", "u2", "m0", "['L1044', 'L1045']"]),
        SEP.join(["u0", "u2", "m0", "['L984', 'L985']"]),
    ],
}
SHAPE = CorpusShape(movies=2, characters=3, lines=5, conversations=2)


def corpus_members() -> dict[str, bytes]:
    """The four files as the official zip nests them, plus the junk it also carries."""
    members = {
        FOLDER + name: ("\n".join(lines) + "\n\n").encode("iso-8859-1")
        for name, lines in CORPUS_TEXT.items()
    }
    members[FOLDER + "README.txt"] = b"Cornell Movie-Dialogs Corpus\n"
    members["__MACOSX/" + FOLDER + "._movie_lines.txt"] = b"\x00\x05\x16\x07junk"
    return members


def build_zip(members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Archive:
    """What the local server sends, and what it saw."""

    body: bytes = b""
    extra_length: int = 0  # declared beyond the body: a truncated transfer
    status: int = 200
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Archive, str]]:
    """A server on 127.0.0.1 sending `Archive.body`; yields the archive to fill and its URL."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy from the environment must not see 127.0.0.1
    archive = Archive()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            archive.requests.append(self.path)
            self.send_response(archive.status)
            self.send_header("Content-Length", str(len(archive.body) + archive.extra_length))
            self.end_headers()
            self.wfile.write(archive.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield archive, f"http://127.0.0.1:{server.server_port}/corpus.zip"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(dest: Path, url: str, body: bytes, *, shape: CorpusShape = SHAPE) -> Path:
    return download_corpus(
        dest, url=url, sha256=sha256(body), shape=shape, progress=False, timeout=5
    )


def test_good_archive_is_downloaded_verified_and_extracted(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    corpus = fetch(tmp_path, url, archive.body)
    assert corpus == tmp_path / "cornell"
    for name in CORPUS_FILES:
        assert (corpus / name).is_file()
    assert "Déjà vu." in (corpus / "movie_lines.txt").read_text(encoding="iso-8859-1")
    assert not (corpus / "._movie_lines.txt").exists()
    # Only the corpus directory remains: no temporary archive or staging directory.
    assert [p.name for p in tmp_path.iterdir()] == ["cornell"]


def test_second_call_returns_without_network(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    first = fetch(tmp_path, url, archive.body)
    second = fetch(tmp_path, url, archive.body)
    assert second == first
    assert len(archive.requests) == 1


def test_wrong_checksum_fails_and_leaves_nothing(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    wrong = "0" * 64
    with pytest.raises(DownloadError, match="checksum") as caught:
        download_corpus(tmp_path, url=url, sha256=wrong, shape=SHAPE, progress=False, timeout=5)
    assert wrong in str(caught.value) and sha256(archive.body) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_fails_and_leaves_nothing(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    archive.extra_length = 1000
    with pytest.raises(DownloadError, match="cut short"):
        fetch(tmp_path, url, archive.body)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_download_error(served, tmp_path):
    archive, url = served
    archive.status = 404
    with pytest.raises(DownloadError, match="404"):
        fetch(tmp_path, url, b"")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_download_error(monkeypatch, tmp_path):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="could not download"):
        fetch(tmp_path, f"http://127.0.0.1:{port}/corpus.zip", b"")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/tmp/evil", "C:/evil"])
def test_member_escaping_destination_is_refused(served, tmp_path, name):
    archive, url = served
    archive.body = build_zip({**corpus_members(), name: b"pwned"})
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="outside the destination"):
        fetch(dest, url, archive.body)
    assert not (tmp_path / "evil").exists()
    assert list(dest.iterdir()) == []


def test_symlink_member_is_refused(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members(), symlinks=(FOLDER + "movie_lines.txt.lnk",))
    with pytest.raises(DownloadError, match="symbolic link"):
        fetch(tmp_path, url, archive.body)
    assert list(tmp_path.iterdir()) == []


def test_shape_mismatch_names_file_and_counts(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    expected = CorpusShape(movies=2, characters=3, lines=6, conversations=2)
    with pytest.raises(DownloadError, match=r"movie_lines\.txt has 5 records, expected 6"):
        fetch(tmp_path, url, archive.body, shape=expected)
    assert list(tmp_path.iterdir()) == []


def test_archive_without_corpus_is_refused(served, tmp_path):
    archive, url = served
    archive.body = build_zip({"notes.txt": b"hello\n"})
    with pytest.raises(DownloadError, match="not the Cornell corpus"):
        fetch(tmp_path, url, archive.body)
    assert list(tmp_path.iterdir()) == []


def test_non_zip_body_is_refused(served, tmp_path):
    archive, url = served
    archive.body = b"<html>not a zip</html>"
    with pytest.raises(DownloadError, match="not a readable zip"):
        fetch(tmp_path, url, archive.body)
    assert list(tmp_path.iterdir()) == []


def test_unverified_existing_directory_is_left_alone(served, tmp_path):
    archive, url = served
    archive.body = build_zip(corpus_members())
    (tmp_path / "cornell").mkdir()
    (tmp_path / "cornell" / "mine.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="not a verified download"):
        fetch(tmp_path, url, archive.body)
    assert (tmp_path / "cornell" / "mine.txt").read_text() == "keep me"
    assert archive.requests == []


def test_verify_corpus_shape_reports_missing_file(tmp_path):
    with pytest.raises(DownloadError, match=r"movie_titles_metadata\.txt is missing"):
        verify_corpus_shape(tmp_path, SHAPE)


def make_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "movie_lines.txt").write_text("L1 +++$+++ u0 +++$+++ m0 +++$+++ A +++$+++ hi\n")
    return directory


@pytest.fixture
def corpus_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A default download root under tmp_path and no $RLCHAT_CORPUS."""
    root = tmp_path / "cache"
    monkeypatch.setattr(download, "default_corpus_root", lambda: root)
    monkeypatch.delenv("RLCHAT_CORPUS", raising=False)
    return root


def test_resolve_prefers_explicit_argument_over_env(corpus_env, monkeypatch, tmp_path):
    explicit = make_corpus(tmp_path / "explicit")
    monkeypatch.setenv("RLCHAT_CORPUS", str(make_corpus(tmp_path / "env")))
    make_corpus(corpus_env / "cornell")
    assert resolve_corpus_dir(explicit) == explicit


def test_resolve_prefers_env_over_default(corpus_env, monkeypatch, tmp_path):
    env = make_corpus(tmp_path / "env")
    monkeypatch.setenv("RLCHAT_CORPUS", str(env))
    make_corpus(corpus_env / "cornell")
    assert resolve_corpus_dir(None) == env


def test_resolve_falls_back_to_default_download(corpus_env):
    default = make_corpus(corpus_env / "cornell")
    assert resolve_corpus_dir(None) == default


def test_resolve_missing_corpus_says_how_to_get_one(corpus_env):
    with pytest.raises(CorpusNotFoundError, match="rlchat data download") as caught:
        resolve_corpus_dir(None)
    assert isinstance(caught.value, FileNotFoundError)
    assert "--corpus" in str(caught.value) and "RLCHAT_CORPUS" in str(caught.value)


def test_resolve_missing_explicit_corpus_is_not_masked_by_default(corpus_env, tmp_path):
    make_corpus(corpus_env / "cornell")
    with pytest.raises(CorpusNotFoundError, match="from --corpus"):
        resolve_corpus_dir(tmp_path / "nowhere")


def test_downloaded_corpus_is_found_by_resolve(served, corpus_env):
    archive, url = served
    archive.body = build_zip(corpus_members())
    corpus = fetch(download.default_corpus_root(), url, archive.body)
    assert resolve_corpus_dir(None) == corpus
