"""Exceptions raised by offcoord. Each message says what went wrong and how to fix it."""

from __future__ import annotations

import difflib
from typing import Iterable


class UnknownIdError(ValueError):
    """An environment or dataset id that is not registered; the message lists the closest ids."""

    def __init__(self, kind: str, requested: str, valid: Iterable[str], message: str | None = None):
        valid = sorted(valid)
        close = difflib.get_close_matches(str(requested), valid, n=3, cutoff=0.4)
        if not close:  # fall back to ids sharing the task prefix, then to everything
            prefix = str(requested).split("-")[0]
            close = [v for v in valid if v.startswith(prefix)][:3] or valid[:3]
        super().__init__(
            message or f"unknown {kind} id {requested!r}; did you mean {', '.join(repr(c) for c in close)}? "
            f"(all {kind} ids: offcoord.list_{'envs' if kind == 'environment' else 'datasets'}())"
        )
        self.requested = requested
        self.suggestions = close


class EpisodeOverError(RuntimeError):
    """`step` was called after every agent terminated or truncated; call `reset` first."""


class CardError(ValueError):
    """A dataset card in datasets_meta/ is missing a field or has a wrong value."""


class DatasetCorruptedError(RuntimeError):
    """A cached dataset file is missing, truncated or does not match its checksum."""


class DatasetVerificationError(RuntimeError):
    """A freshly generated dataset does not match the statistics its card expects."""
