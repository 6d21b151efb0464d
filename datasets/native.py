"""Base class of the adapters that read a benchmark's own files (from a folder or a ``.tar`` read in place).

A subclass sets ``spec`` and ``obtain``, finds its layout in ``setup()`` (calling :meth:`use_list`), and decodes one
sample in ``load``. Construction reads the list and checks that every file it names exists (one error lists the
absent ones); pixels are read only in ``load``, one sample at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from datasets.base import Dataset
from datasets.lists import SampleList, make_list, parse_list
from datasets.sources import MissingFileError, Source, open_source

LIST_LIMIT = 10  # absent files an error names before "... and N more"


class NativeDataset(Dataset):
    """A benchmark read from its files. ``root``: folder or .tar; ``list_path``: a user-supplied sample list."""

    needs_root = True  # the harness resolves a root (datasets.roots) before constructing it
    evaluation = True  # part of `--datasets all`
    obtain = ""  # where to download it (shown when its root is missing)
    needs_list = False  # the benchmark ships no list: the user must supply one (datasets.roots)
    layout = "?"

    def __init__(self, root, list_path: Optional[str] = None, warn_list: bool = True):
        if root is None:
            raise FileNotFoundError(f"dataset {self.name} needs its files: pass root=PATH (CLI: --data-root "
                                    f"{self.name}=PATH). Obtain it: {self.obtain}")
        self.source: Source = open_source(root)
        self.list_path, self.warn_list = list_path, warn_list
        self.sample_list: Optional[SampleList] = None
        self._ids: list[str] = []
        self.setup()

    def setup(self) -> None:
        """Detect the layout, then call :meth:`use_list` (subclasses)."""
        raise NotImplementedError

    def user_rows(self, min_columns: int) -> Optional[list[list[str]]]:
        """The rows of the user-supplied list, or None when none was given."""
        if self.list_path is None:
            return None
        path = Path(self.list_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"sample list {path} for {self.name} does not exist")
        return parse_list(path.read_text(), str(path), min_columns)

    def use_list(self, rows, origin: str, ids: list[str], files: list[str]) -> None:
        """Adopt a list: fingerprint it, keep ``ids`` (the evaluated samples), check that ``files`` exist."""
        self.sample_list = make_list(self.name, rows, origin, warn=self.warn_list)
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.name}: the sample list ({origin}) names a sample twice")
        if not ids:
            raise ValueError(f"{self.name}: no samples in {self.source.where()} ({origin})")
        absent = [f for f in files if not self.source.exists(f)]
        if absent:
            more = f"\n  ... and {len(absent) - LIST_LIMIT} more" if len(absent) > LIST_LIMIT else ""
            raise MissingFileError(
                f"{self.name}: {len(absent)} file(s) named by the sample list ({origin}) are absent from "
                f"{self.source.where()} (layout: {self.layout}):\n  " + "\n  ".join(absent[:LIST_LIMIT]) + more)
        self._ids = list(ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def read(self, relpath: str) -> bytes:
        return self.source.read(relpath)

    def where(self, relpath: str) -> str:
        return self.source.where(relpath)

    def unknown(self, sample_id: str) -> KeyError:
        return KeyError(f"{self.name}: unknown sample id {sample_id!r} (ids are the list's RGB paths, e.g. "
                        f"{self._ids[0]!r})")

    def describe(self) -> dict:
        return {**super().describe(), **self.source.describe(), "layout": self.layout,
                **(self.sample_list.describe() if self.sample_list else {})}
