"""The official Cornell Movie-Dialogs Corpus: fetch, verify checksum, extract safely.

Corpus: Danescu-Niculescu-Mizil and Lee, "Chameleons in imagined conversations" (2011),
https://www.cs.cornell.edu/~cristian/Cornell_Movie-Dialogs_Corpus.html

`download_corpus(dest)` leaves the four corpus files directly inside `dest / "cornell"`.
That directory appears in one atomic rename, after the checksum and the record counts were
checked, so any directory found there is complete; a failed run leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import posixpath
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import platformdirs
from tqdm import tqdm

from rlchat import __version__

logger = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
OFFICIAL_SHA256 = "3bde8a571f615201bc2d2453e22878090719638592f774720eddec739de8c900"

CORPUS_DIRNAME = "cornell"
"""Name of the directory, inside a download's `dest`, that holds the four files."""

CORPUS_ENV_VAR = "RLCHAT_CORPUS"
# Written into the corpus directory before the rename that publishes it: its presence means
# this exact archive was checked, so a later call can return without touching the network.
MARKER_NAME = ".rlchat-download.json"
# macOS resource forks zipped next to the real files; never corpus data.
JUNK_PREFIX = "__MACOSX/"
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class CorpusShape:
    """Records (non-empty lines) per corpus file: a cheap check that extraction was complete."""

    movies: int
    characters: int
    lines: int
    conversations: int


FULL_CORPUS_SHAPE = CorpusShape(movies=617, characters=9035, lines=304713, conversations=83097)

# Which file each CorpusShape field counts.
SHAPE_FILES = {
    "movies": "movie_titles_metadata.txt",
    "characters": "movie_characters_metadata.txt",
    "lines": "movie_lines.txt",
    "conversations": "movie_conversations.txt",
}
CORPUS_FILES = tuple(SHAPE_FILES.values())


class DownloadError(RuntimeError):
    """The corpus could not be fetched, verified or unpacked; the message says what to do."""


class CorpusNotFoundError(FileNotFoundError):
    """No corpus where one was expected; the message says how to get or point to one."""


def default_corpus_root() -> Path:
    """Where `rlchat data download` puts the corpus unless told otherwise."""
    return Path(platformdirs.user_cache_dir("rlchat")) / "corpus"


def corpus_directory(dest: Path) -> Path:
    """The directory `download_corpus(dest)` fills, whether or not it exists yet."""
    return Path(dest) / CORPUS_DIRNAME


def resolve_corpus_dir(corpus: Path | None) -> Path:
    """The directory holding the four corpus files: `corpus`, else $RLCHAT_CORPUS, else the
    default download location. Never downloads."""
    if corpus is not None:
        directory, source = Path(corpus).expanduser(), "--corpus"
    elif os.environ.get(CORPUS_ENV_VAR):
        directory, source = Path(os.environ[CORPUS_ENV_VAR]).expanduser(), f"${CORPUS_ENV_VAR}"
    else:
        directory, source = corpus_directory(default_corpus_root()), "the default location"
    if not (directory / SHAPE_FILES["lines"]).is_file():
        raise CorpusNotFoundError(
            f"no Cornell corpus at {directory} (from {source}): {SHAPE_FILES['lines']} is missing. "
            f"Run `rlchat data download` to fetch it, or pass --corpus DIR / set "
            f"{CORPUS_ENV_VAR}=DIR to a directory holding the corpus files."
        )
    return directory


def verify_corpus_shape(directory: Path, shape: CorpusShape) -> None:
    """Raise DownloadError unless every corpus file in `directory` has the expected record count."""
    problems = _shape_problems(Path(directory), shape)
    if problems:
        raise DownloadError(
            f"{directory} does not hold the expected corpus: {'; '.join(problems)}. "
            "Download it again with `rlchat data download`."
        )


def download_corpus(
    dest: Path,
    *,
    url: str = OFFICIAL_URL,
    sha256: str = OFFICIAL_SHA256,
    shape: CorpusShape = FULL_CORPUS_SHAPE,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Fetch, verify and unpack the corpus; return `dest / "cornell"`, which holds the files.

    A second call finds the marker of the first and returns at once, without network access.
    """
    dest = Path(dest)
    target = corpus_directory(dest)
    if _is_verified(target, sha256=sha256, shape=shape):
        logger.info("corpus already downloaded and verified at %s", target)
        return target
    if target.exists():
        raise DownloadError(
            f"{target} exists but is not a verified download of {url}: delete it to download "
            f"again, or pass --corpus {target} to use the files that are there."
        )
    dest.mkdir(parents=True, exist_ok=True)
    # One scratch directory on the same filesystem as `target`: the final rename is atomic, and
    # removing this directory is the whole cleanup, whatever failed.
    work = Path(tempfile.mkdtemp(dir=dest, prefix=".cornell-", suffix=".part"))
    try:
        archive, staging = work / "corpus.zip", work / CORPUS_DIRNAME
        staging.mkdir()
        with archive.open("wb") as out:
            actual = _fetch(url, out, progress=progress, timeout=timeout)
        if actual != sha256.lower():
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {actual}. "
                "The download was corrupted or the file changed upstream; try again, and if it "
                "persists check the URL."
            )
        _extract_corpus(archive, staging, url=url)
        problems = _shape_problems(staging, shape)
        if problems:
            raise DownloadError(
                f"the archive from {url} does not hold the expected corpus: {'; '.join(problems)}. "
                "It may be a different release; check the URL and the expected shape."
            )
        marker = {"url": url, "sha256": actual, "shape": asdict(shape)}
        (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _publish(staging, target, sha256=sha256, shape=shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("corpus downloaded and verified at %s", target)
    return target


def _is_verified(target: Path, *, sha256: str, shape: CorpusShape) -> bool:
    """Whether `target` is a finished download of this exact archive and shape."""
    try:
        marker = json.loads((target / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("sha256") == sha256.lower()
        and marker.get("shape") == asdict(shape)
        and all((target / name).is_file() for name in CORPUS_FILES)
    )


def _fetch(url: str, out: BinaryIO, *, progress: bool, timeout: float) -> str:
    """Stream `url` into `out`, returning the sha256 hex digest of what was received."""
    request = urllib.request.Request(url, headers={"User-Agent": f"rlchat/{__version__}"})
    digest = hashlib.sha256()
    received, total = 0, None
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="Cornell corpus",
                disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"{url} answered HTTP {error.code} {error.reason}: check the URL, or try again later."
        ) from error
    except http.client.IncompleteRead as error:
        raise _truncated(url, received=received + len(error.partial), total=total) from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"could not download {url}: {reason}. Check the network connection (and any proxy "
            "settings) and try again."
        ) from error
    if total is not None and received != total:
        raise _truncated(url, received=received, total=total)
    return digest.hexdigest()


def _truncated(url: str, *, received: int, total: int | None) -> DownloadError:
    return DownloadError(
        f"the download of {url} was cut short after {received} of {total} bytes; "
        "try again (the partial file was removed)."
    )


def _extract_corpus(archive: Path, into: Path, *, url: str) -> None:
    """Copy the files of the archive's corpus folder flat into `into`, after refusing the whole
    archive if any member could write outside it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                _check_member(member, url=url)
            files = [m for m in members if not m.is_dir() and not _is_junk(m.filename)]
            home = _corpus_folder([m.filename for m in files], url=url)
            for member in files:
                if posixpath.dirname(member.filename) != home:
                    continue
                with (
                    zf.open(member) as source,
                    (into / posixpath.basename(member.filename)).open("wb") as sink,
                ):
                    shutil.copyfileobj(source, sink, CHUNK_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise DownloadError(
            f"the file downloaded from {url} is not a readable zip archive ({error}); "
            "check the URL and try again."
        ) from error


def _corpus_folder(names: list[str], *, url: str) -> str:
    """The one archive folder that holds movie_lines.txt (the official zip nests it)."""
    homes = {posixpath.dirname(n) for n in names if posixpath.basename(n) == SHAPE_FILES["lines"]}
    if len(homes) != 1:
        found = f"{len(homes)}, in {sorted(homes)}" if homes else "none"
        raise DownloadError(
            f"the archive from {url} should hold one {SHAPE_FILES['lines']}, found {found}: "
            "it is not the Cornell corpus; check the URL."
        )
    (home,) = homes
    return home


def _check_member(member: zipfile.ZipInfo, *, url: str) -> None:
    """Refuse members that are links, absolute, or climb out of the extraction directory."""
    name = member.filename.replace("\\", "/")
    normal = posixpath.normpath(name)
    escapes = (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).drive != ""
        or normal == ".."
        or normal.startswith("../")
    )
    if escapes:
        raise DownloadError(
            f"refusing the archive from {url}: member {member.filename!r} would be written "
            "outside the destination. The file is not the official corpus; check the URL."
        )
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DownloadError(
            f"refusing the archive from {url}: member {member.filename!r} is a symbolic link. "
            "The file is not the official corpus; check the URL."
        )


def _is_junk(name: str) -> bool:
    return name.startswith(JUNK_PREFIX) or posixpath.basename(name).startswith("._")


def _publish(staging: Path, target: Path, *, sha256: str, shape: CorpusShape) -> None:
    """Move the checked directory into place in one step, so readers never see half of it."""
    try:
        staging.rename(target)
    except OSError as error:
        # Another process may have finished the same download first; its copy is as good.
        if _is_verified(target, sha256=sha256, shape=shape):
            return
        raise DownloadError(f"could not move the corpus into {target}: {error}") from error


def _shape_problems(directory: Path, shape: CorpusShape) -> list[str]:
    """One line per corpus file that is missing or has the wrong number of records."""
    problems = []
    for field_name, filename in SHAPE_FILES.items():
        path = directory / filename
        expected = getattr(shape, field_name)
        if not path.is_file():
            problems.append(f"{filename} is missing (expected {expected} records)")
            continue
        found = _count_records(path)
        if found != expected:
            problems.append(f"{filename} has {found} records, expected {expected}")
    return problems


def _count_records(path: Path) -> int:
    """Non-empty lines; bytes suffice, as ISO-8859-1 maps every byte and keeps "\\n" as is."""
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())
