"""Collecting everything wrong with a dataset tree into one report.

Readers keep going after a problem so that one run lists all of them (a count plus the first
few offenders per kind of problem), then raise a single `DatasetError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["DatasetCountWarning", "DatasetError", "Problems", "SkippedImagesWarning", "warn_unexpected_counts"]

MAX_EXAMPLES = 5


class DatasetError(ValueError):
    """A dataset tree failed validation.

    Attributes:
      dataset: "SYSU-MM01", "RegDB" or "LLCM".
      root: the dataset root.
      problems: kind of problem -> (count, first offenders).
    """

    def __init__(self, dataset: str, root: Path, problems: Mapping[str, tuple[int, tuple[str, ...]]]):
        self.dataset = dataset
        self.root = Path(root)
        self.problems = dict(problems)
        lines = [f"{dataset} at {self.root} failed validation ({len(self.problems)} kind(s) of problem):"]
        for kind, (count, examples) in self.problems.items():
            shown = "; ".join(examples)
            more = f"; ... and {count - len(examples)} more" if count > len(examples) else ""
            lines.append(f"  - {kind} [{count}]: {shown}{more}")
        super().__init__("\n".join(lines))


class DatasetCountWarning(UserWarning):
    """A real dataset's counts differ from the standard release."""


class SkippedImagesWarning(UserWarning):
    """Unreadable images were left out (strict=False)."""


class Problems:
    """Problem kind -> count and first `MAX_EXAMPLES` offenders, in the order first seen."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._examples: dict[str, list[str]] = {}

    def add(self, kind: str, offender: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        examples = self._examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(offender)

    def extend(self, kind: str, offenders: Iterable[str]) -> None:
        for offender in offenders:
            self.add(kind, offender)

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __contains__(self, kind: str) -> bool:
        return kind in self._counts

    def as_dict(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        return {k: (n, tuple(self._examples[k])) for k, n in self._counts.items()}

    def raise_if_any(self, dataset: str, root: Path) -> None:
        if self:
            raise DatasetError(dataset, root, self.as_dict())


def warn_unexpected_counts(dataset: str, root: Path, expected: Mapping[str, int], actual: Mapping[str, int], synthetic: bool) -> None:
    """Warns once, listing every count that differs from the standard release (not for synthetic data)."""
    if synthetic:
        return
    off = [f"{what}: {actual[what]} (standard {n})" for what, n in expected.items() if actual[what] != n]
    if off:
        warnings.warn(
            f"{dataset} at {root} differs from the standard release: {'; '.join(off)}. "
            "Fine for a subset or a re-split; pass synthetic=True for generated data.",
            DatasetCountWarning,
            stacklevel=4,
        )
