"""The files of a dataset root: an extracted folder, or an uncompressed ``.tar`` read in place (never extracted).

``open_source(root)`` returns a :class:`Source` with random access by relative path (``/``-separated, relative to
the root; a tar's leading ``./`` is ignored):

    src = open_source("/data/nyuv2.tar")      # or "/data/nyuv2" (a folder)
    src.exists("test/kitchen_0004/rgb_0001.png")
    data = src.read("test/kitchen_0004/rgb_0001.png")   # bytes
    with src.open("nyu_depth_v2_labeled.mat") as f:     # seekable binary file (h5py reads it lazily)
        ...
    src.list("test/")                                   # sorted relative paths of the files below a folder

A tar is indexed on first access (its headers only: one seek per member, no data read) and re-opened after a fork.
``src.sub("folder")`` is the same root seen from a sub-folder (an archive whose files sit below a top folder).
A missing file raises :class:`MissingFileError` (a FileNotFoundError) and a tar member shorter than its header says
raises :class:`TruncatedFileError` (a ValueError), both naming the root and the file.
"""
from __future__ import annotations

import io
import os
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO, Optional

COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".7z", ".gz")


class MissingFileError(FileNotFoundError):
    """A file the dataset layout needs is not in the root (message names root, file and fix)."""


class TruncatedFileError(ValueError):
    """A file is shorter than it should be (an interrupted download or copy)."""


def _clean(relpath: str) -> str:
    path = posixpath.normpath(relpath.replace("\\", "/"))
    while path.startswith("./"):
        path = path[2:]
    return "" if path == "." else path.lstrip("/")


class Source:
    """Base class: ``root`` (what the user gave) and ``base`` (a sub-folder of it, '' = the root itself)."""

    kind = "?"

    def __init__(self, root: Path, base: str = ""):
        self.root, self.base = Path(root), _clean(base)

    def where(self, relpath: str = "") -> str:
        """Human-readable location of a file, for error messages."""
        inner = posixpath.join(self.base, _clean(relpath)) if relpath else self.base
        return f"{self.root}" + (f" (member {inner})" if self.kind == "tar" and inner else
                                 f"/{inner}" if inner else "")

    def _full(self, relpath: str) -> str:
        return _clean(posixpath.join(self.base, _clean(relpath)))

    def sub(self, folder: str) -> "Source":
        raise NotImplementedError

    def exists(self, relpath: str) -> bool:
        raise NotImplementedError

    def is_dir(self, relpath: str) -> bool:
        raise NotImplementedError

    def read(self, relpath: str) -> bytes:
        raise NotImplementedError

    def open(self, relpath: str) -> BinaryIO:
        raise NotImplementedError

    def list(self, folder: str = "") -> list[str]:
        """Sorted paths (relative to this source) of every file below ``folder`` (recursively)."""
        raise NotImplementedError

    def top_folders(self) -> list[str]:
        """Names of the folders directly in this source."""
        raise NotImplementedError

    def missing(self, relpath: str, expected: str = "") -> MissingFileError:
        hint = f" ({expected})" if expected else ""
        return MissingFileError(f"{self.where(relpath)}: no such file{hint} in dataset root {self.root}")

    def describe(self) -> dict:
        return {"root": str(self.root), "kind": self.kind, **({"base": self.base} if self.base else {})}


class DirSource(Source):
    """An extracted folder."""

    kind = "folder"

    def sub(self, folder: str) -> "DirSource":
        return DirSource(self.root, self._full(folder))

    def _path(self, relpath: str) -> Path:
        return self.root / self._full(relpath)

    def exists(self, relpath: str) -> bool:
        return self._path(relpath).is_file()

    def is_dir(self, relpath: str) -> bool:
        return self._path(relpath).is_dir()

    def read(self, relpath: str) -> bytes:
        path = self._path(relpath)
        if not path.is_file():
            raise self.missing(relpath)
        return path.read_bytes()

    def open(self, relpath: str) -> BinaryIO:
        path = self._path(relpath)
        if not path.is_file():
            raise self.missing(relpath)
        return open(path, "rb")

    def list(self, folder: str = "") -> list[str]:
        top = self._path(folder)
        if not top.is_dir():
            return []
        start = self.root / self.base if self.base else self.root
        out = []
        for dirpath, _, files in os.walk(top):
            rel = Path(dirpath).relative_to(start).as_posix()
            out.extend(_clean(posixpath.join(rel, f)) for f in files)
        return sorted(out)

    def top_folders(self) -> list[str]:
        start = self._path("")
        return sorted(p.name for p in start.iterdir() if p.is_dir()) if start.is_dir() else []


class _TarIndex:
    """The member index of one tar file, opened lazily and re-opened in a forked process."""

    def __init__(self, path: Path):
        self.path, self._pid, self._tar, self._members = path, None, None, None
        self.truncated = ""  # set when the member headers end early: the tar was cut short

    def tar(self) -> tarfile.TarFile:
        if self._tar is None or self._pid != os.getpid():
            try:
                self._tar = tarfile.open(self.path, mode="r:")
            except tarfile.ReadError as err:
                raise ValueError(f"{self.path}: not a readable uncompressed .tar ({err}); a dataset root is a "
                                 f"folder or an uncompressed .tar (decompress .tar.gz with gunzip first)") from err
            self._members = {}
            try:
                for member in self._tar:  # headers only: tarfile seeks past each member's data
                    self._members[_clean(member.name)] = member
            except tarfile.ReadError as err:  # cut short: keep the members before the cut, name it on a miss
                last = list(self._members)[-1] if self._members else "none"
                self.truncated = f"the tar ends early ({err}; last complete header: {last}): download it again"
            self._pid = os.getpid()
        return self._tar

    def members(self) -> dict[str, tarfile.TarInfo]:
        self.tar()
        return self._members


class TarSource(Source):
    """An uncompressed tar file, read in place by member name."""

    kind = "tar"

    def __init__(self, root: Path, base: str = "", index: Optional[_TarIndex] = None):
        super().__init__(root, base)
        self.index = index or _TarIndex(Path(root))

    def sub(self, folder: str) -> "TarSource":
        return TarSource(self.root, self._full(folder), self.index)

    def _member(self, relpath: str) -> tarfile.TarInfo:
        member = self.index.members().get(self._full(relpath))
        if member is None or not member.isfile():
            raise self.missing(relpath, self.index.truncated)
        return member

    def exists(self, relpath: str) -> bool:
        member = self.index.members().get(self._full(relpath))
        return member is not None and member.isfile()

    def is_dir(self, relpath: str) -> bool:
        prefix = self._full(relpath) + "/"
        return any(name.startswith(prefix) for name in self.index.members())

    def read(self, relpath: str) -> bytes:
        member = self._member(relpath)
        try:
            data = self.index.tar().extractfile(member).read()
        except (tarfile.ReadError, EOFError, OSError) as err:
            raise TruncatedFileError(f"{self.where(relpath)}: cannot read {member.size} bytes ({err}); the tar "
                                     f"is truncated or damaged: download it again") from err
        if len(data) != member.size:
            raise TruncatedFileError(f"{self.where(relpath)}: {len(data)} of {member.size} bytes; the tar is "
                                     f"truncated: download it again")
        return data

    def open(self, relpath: str) -> BinaryIO:
        member = self._member(relpath)
        end = member.offset_data + member.size
        if end > self.root.stat().st_size:
            raise TruncatedFileError(f"{self.where(relpath)}: the member ends at byte {end} but the tar has "
                                     f"{self.root.stat().st_size}; the tar is truncated: download it again")
        return self.index.tar().extractfile(member)

    def list(self, folder: str = "") -> list[str]:
        prefix = self._full(folder)
        prefix = prefix + "/" if prefix else ""
        cut = len(self.base) + 1 if self.base else 0
        return sorted(name[cut:] for name, m in self.index.members().items()
                      if m.isfile() and name.startswith(prefix))

    def top_folders(self) -> list[str]:
        prefix = self.base + "/" if self.base else ""
        tops = set()
        for name in self.index.members():
            if name.startswith(prefix) and "/" in name[len(prefix):]:
                tops.add(name[len(prefix):].split("/", 1)[0])
        return sorted(tops)


def open_source(root) -> Source:
    """A folder or an uncompressed .tar; raises FileNotFoundError / ValueError naming the root and the fix."""
    path = Path(os.path.expanduser(str(root)))
    if not path.exists():
        raise FileNotFoundError(f"dataset root {path} does not exist (give an extracted folder or a .tar)")
    if path.is_dir():
        return DirSource(path)
    name = path.name.lower()
    if name.endswith(COMPRESSED_SUFFIXES):
        raise ValueError(f"dataset root {path} is compressed; the harness reads a folder or an uncompressed .tar "
                         f"in place: extract it, or decompress it to .tar (e.g. gunzip)")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"dataset root {path} is neither a folder nor a .tar file")
    return TarSource(path)


def locate(source: Source, marker, what: str) -> Source:
    """The source itself if ``marker(source)`` holds, else its single top folder if it holds there.

    Archives often keep their files below one top folder (``eth3d/rgb/...``); this accepts either. Raises
    ValueError naming the root and ``what`` the layout should look like.
    """
    if marker(source):
        return source
    tops = source.top_folders()
    if len(tops) == 1 and marker(source.sub(tops[0])):
        return source.sub(tops[0])
    raise ValueError(f"dataset root {source.where()} does not have the expected layout: {what}")


def locate_if_found(source: Source, marker) -> Source:
    """:func:`locate`, but the source itself when neither it nor its single top folder holds ``marker``: for an
    adapter whose own checks then name what is absent (e.g. every file of a sample list)."""
    try:
        return locate(source, marker, "")
    except ValueError:
        return source


def read_text(source: Source, relpath: str) -> str:
    return io.TextIOWrapper(io.BytesIO(source.read(relpath)), encoding="utf-8").read()
