"""Resumable results: a JSON dict of finished items that survives a killed run.

A generation stage (captioning, rephrasing) adds each finished item to a ``ProgressStore``;
the store rewrites its file atomically every ``flush_every`` items or ``flush_seconds``
seconds, and when closed. A rerun opens the same file and skips the keys it holds, so a
kill loses at most the items since the last flush.

File format: ``{"meta": {...}, "items": {key: value}}``. ``meta`` records the settings the
items were produced with; reopening with different settings is refused, because mixing the
outputs of two models or prompts in one dataset would go unnoticed otherwise.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Self

from tvilfm_jax.data.text.atomic_files import write_json


class ProgressStore:
    """Finished items of one stage, kept on disk at ``path``. Use as a context manager."""

    def __init__(self, path: str, meta: dict, flush_every: int = 256, flush_seconds: float = 60.0):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.path = path
        self.meta = json.loads(json.dumps(meta))  # normalise tuples etc. as JSON would
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._items: dict = {}
        self._unsaved = 0
        self._last_flush = time.monotonic()
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.path}: not a valid progress file ({err}); delete it to start over") from None
        if not (isinstance(data, dict) and isinstance(data.get("meta"), dict)
                and isinstance(data.get("items"), dict)):
            raise ValueError(  # noqa: TRY004 (bad file content, not a bad argument)
                f"{self.path}: expected {{'meta': {{...}}, 'items': {{...}}}}; delete it to start over")
        if data["meta"] != self.meta:
            changed = sorted(k for k in set(data["meta"]) | set(self.meta)
                             if data["meta"].get(k) != self.meta.get(k))
            details = ", ".join(f"{k}: {data['meta'].get(k)!r} -> {self.meta.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.path}: was produced with different settings ({details}); "
                "rerun with the original settings, or delete the file to start over")
        self._items = data["items"]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __getitem__(self, key: str):
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> dict:
        """A copy of the finished items."""
        return dict(self._items)

    def add(self, key: str, value) -> None:
        """Records a finished item (any JSON value); writes the file when a flush is due."""
        self._items[key] = value
        self._unsaved += 1
        if (self._unsaved >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        if self._unsaved or not os.path.exists(self.path):
            write_json(self.path, {"meta": self.meta, "items": self._items}, indent=None)
        self._unsaved = 0
        self._last_flush = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        # Also on an exception or KeyboardInterrupt: keep what was finished.
        self.flush()


def pending_chunks(keys: Sequence[str], done: Callable[[str], bool], batch_size: int) -> Iterator[list[str]]:
    """The not-yet-done keys, batched as fixed chunks of the full ``keys`` list.

    Chunks are cut from the full list, not from what is left, so a resumed run forms the same
    batches as an uninterrupted one; seeded sampling and padding then give the same outputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    for start in range(0, len(keys), batch_size):
        pending = [k for k in keys[start:start + batch_size] if not done(k)]
        if pending:
            yield pending
