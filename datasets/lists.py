"""Sample lists: parsing, fingerprints (protocol.md) and the check against the standard lists.

A list is whitespace-separated columns, one sample per line (Marigold's ``data_split`` files, DSINE's split files).
Its fingerprint is the first 16 hex digits of sha256 over the sorted first column, joined by newlines. Lists that
ship with a benchmark or follow from its files are read from the dataset; the others are supplied by the user
(:mod:`datasets.roots`). A list whose fingerprint is not the standard one still runs, with a loud warning, and the
manifest and summary record its fingerprint, so numbers from another list are never mistaken for comparable ones.

``STANDARD`` holds the fingerprints only (computed from the public lists named there); the project does not copy
the lists themselves.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class StandardList:
    label: str  # what it is and where it is published
    fingerprint: str
    lines: int  # rows in the list
    samples: int  # rows that are evaluated (KITTI: those with GT)


_MARIGOLD = "github.com/prs-eth/Marigold data_split/"
_DSINE = "github.com/baegwangbin/DSINE data/datasets/"

# Registered dataset name -> its standard lists (fingerprints computed from the files at the commits in
# ../shared/splits/SOURCES.txt).
STANDARD: dict[str, tuple[StandardList, ...]] = {
    "nyuv2": (StandardList(f"NYUv2 test, archive layout ({_MARIGOLD}nyu/labeled/filename_list_test.txt)",
                           "507e5cc85ce4c595", 654, 654),),
    "kitti": (StandardList(f"KITTI Eigen test with GT ({_MARIGOLD}kitti/eigen_test_files_with_gt.txt)",
                           "3b49639f41e4325f", 697, 652),),
    "eth3d": (StandardList(f"ETH3D 13 training scenes ({_MARIGOLD}eth3d/eth3d_filename_list.txt)",
                           "2eaec364cf5eea08", 454, 454),),
    "scannet": (StandardList(f"ScanNet val 800 ({_MARIGOLD}scannet/scannet_val_sampled_list_800_1.txt)",
                             "4ee072e18615bc43", 800, 800),),
    "diode": (StandardList(f"DIODE val all ({_MARIGOLD}diode/diode_val_all_filename_list.txt)",
                           "8c1093e7b2b637f1", 771, 771),
              StandardList(f"DIODE val indoor ({_MARIGOLD}diode/diode_val_indoor_filename_list.txt)",
                           "49bf3e099ca435fd", 325, 325),
              StandardList(f"DIODE val outdoor ({_MARIGOLD}diode/diode_val_outdoor_filename_list.txt)",
                           "d99d1bf99926ce62", 446, 446)),
    "nyuv2_normals": (StandardList(f"NYUv2 normals test ({_DSINE}nyuv2/split/test.txt)", "e85bb58eaeaed3a7", 654, 654),
                      StandardList(f"NYUv2 normals test ({_MARIGOLD}nyu_normals/nyuv2_test.txt)",
                                   "c486bac88b02d52f", 654, 654)),
    "scannet_normals": (StandardList(f"ScanNet normals test ({_DSINE}scannet/split/test.txt; the same set as "
                                     f"{_MARIGOLD}scannet_normals/scannet_test.txt)", "00119ce6edc0739b", 300, 300),),
    "ibims_normals": (StandardList(f"iBims-1 normals ({_DSINE}ibims/split/ibims.txt)", "60fc1391c6afc956", 100, 100),
                      StandardList(f"iBims-1 normals ({_MARIGOLD}ibims_normals/ibims_test.txt)",
                                   "053f866922e23e68", 100, 100)),
    "sintel_normals": (StandardList(f"Sintel normals ({_DSINE}sintel/split/sintel.txt)", "9cab5ef7d6909ed5",
                                    1064, 1064),),
}


class ListMismatchWarning(UserWarning):
    """The sample list is not a standard one: numbers are not comparable with published ones."""


def fingerprint(first_column) -> str:
    """First 16 hex digits of sha256 over the sorted first column joined by newlines (protocol.md)."""
    return hashlib.sha256("\n".join(sorted(first_column)).encode()).hexdigest()[:16]


def parse_list(text: str, name: str, min_columns: int = 1) -> list[list[str]]:
    """Non-empty lines -> their whitespace-separated columns; a line with too few columns is an error."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) < min_columns:
            raise ValueError(f"{name}:{number}: {len(cols)} column(s), expected at least {min_columns}: {line!r}")
        rows.append(cols)
    if not rows:
        raise ValueError(f"{name}: the sample list is empty")
    return rows


@dataclass(frozen=True)
class SampleList:
    """A dataset's sample list: its rows, where it came from, its fingerprint and which standard it matches."""

    rows: tuple[tuple[str, ...], ...]
    origin: str  # "shipped: <file>", "derived from the files", "user list <path>"
    fingerprint: str
    standard: Optional[str]  # label of the matching standard list, or None

    def describe(self) -> dict:
        return {"list_origin": self.origin, "list_lines": len(self.rows), "list_fingerprint": self.fingerprint,
                "list_standard": self.standard or "NOT STANDARD"}


def make_list(dataset: str, rows, origin: str, warn: bool = True) -> SampleList:
    """Fingerprint ``rows`` and compare with the standard lists of ``dataset`` (warns loudly on a mismatch)."""
    rows = tuple(tuple(r) for r in rows)
    fp = fingerprint(r[0] for r in rows)
    standard = next((s.label for s in STANDARD.get(dataset, ()) if s.fingerprint == fp), None)
    if standard is None and warn and dataset in STANDARD:
        expected = "; ".join(f"{s.fingerprint} = {s.label}, {s.lines} lines" for s in STANDARD[dataset])
        bar = "!" * 78
        warnings.warn(ListMismatchWarning(
            f"\n{bar}\n{dataset}: the sample list ({origin}, {len(rows)} lines) has fingerprint {fp}, which is NOT "
            f"a standard list ({expected}). Numbers on it are not comparable with published ones; the fingerprint "
            f"is recorded in the manifest and the summary.\n{bar}"), stacklevel=2)
    return SampleList(rows, origin, fp, standard)
