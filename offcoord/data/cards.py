"""Dataset cards: the small TOML files in ``datasets_meta/`` that say how each dataset is made.

A card describes one *stored copy* (one behavior); it may serve several dataset ids, one per
observability view of the same trajectories (``ant-expert-fo`` and ``ant-expert-po``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from offcoord.errors import CardError

CARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Segment:
    """One behavior's share of a stored copy. Segments are stored in card order (``full-replay``:
    the checkpoint curriculum in training order); ``transitions`` is this segment's exact count."""

    behavior: str
    behavior_kwargs: Mapping[str, Any]
    transitions: int


@dataclass(frozen=True)
class Card:
    """A parsed dataset card. ``sha256`` is the hash of the card file's bytes (recorded in results)."""

    id: str
    description: str
    datasets: Mapping[str, str]  # dataset id -> environment id (its observation view)
    env: str  # environment the behavior runs in (any view of the task; the stored state is global)
    behavior: str  # "" for a union card
    behavior_kwargs: Mapping[str, Any]
    transitions: int
    seed: int
    reference_min: float
    reference_max: float
    expected: Mapping[str, Any]
    path: Path
    sha256: str
    format_version: int = CARD_FORMAT_VERSION
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    segments: tuple[Segment, ...] = ()  # behaviors run in order; one segment unless [[generation.segments]]
    union: tuple[str, ...] = ()  # card ids whose stored copies are concatenated (``ant-mixed``), instead of segments
    base_id: str = ""  # the card this one was resized from (``resized``); "" for a card file
    recipe_sha256: str = ""  # hash of what decides the data (id, format, [generation]); see recipe_key
    workers: int | None = None  # generation processes (None: decided by the size, see offcoord.data.generate)

    @property
    def is_variant(self) -> bool:
        """True for a smaller (or larger) copy made by :meth:`resized`: the ``[expected]`` checks do not apply."""
        return bool(self.base_id)

    def resized(self, transitions: int) -> "Card":
        """This card with ``transitions`` transitions in all, cached under its own id.

        Segment shares keep their proportions (remainder to the last); a union takes ``transitions``
        split evenly over its members, each itself resized. The variant's hash covers the size, so
        its cache never mixes with the full copy.
        """
        if isinstance(transitions, bool) or not isinstance(transitions, (int, np.integer)) or transitions <= 0:
            raise ValueError(f"size must be a positive integer number of transitions, got {transitions!r}")
        transitions = int(transitions)
        if transitions == self.transitions and not self.is_variant:
            return self
        base = self.base_id or self.id
        return replace(
            self,
            id=f"{base}@{transitions}",
            transitions=transitions,
            segments=tuple(
                replace(seg, transitions=n) for seg, n in zip(self.segments, split_evenly(transitions, [s.transitions for s in self.segments]))
            ),
            expected={},
            sha256=hashlib.sha256(f"{self.sha256}:transitions={transitions}".encode()).hexdigest(),
            recipe_sha256=hashlib.sha256(f"{self.recipe_sha256}:transitions={transitions}".encode()).hexdigest(),
            base_id=base,
        )


def split_evenly(total: int, weights) -> list[int]:
    """``total`` split in proportion to ``weights`` (integers; the remainder goes to the last part)."""
    weights = [float(w) for w in weights]
    if not weights:
        return []
    parts = [int(total * w // sum(weights)) for w in weights[:-1]]
    return parts + [total - sum(parts)]


def meta_dir() -> Path:
    """The directory holding the cards (``datasets_meta/`` in a checkout, packaged in a wheel)."""
    return Path(str(resources.files("offcoord.datasets_meta")))


def weights_path(name: str) -> Path:
    """Where a behavior's ``weights`` file is: absolute paths as given, relative ones in :func:`meta_dir`."""
    path = Path(name)
    return path if path.is_absolute() else meta_dir() / path


def parse_card(path: Path) -> Card:
    """Parse and check the card file at ``path``."""
    path = Path(path)
    return card_from_bytes(path.read_bytes(), path)


def card_from_bytes(data_bytes: bytes, path: Path) -> Card:
    """Parse card text; ``path`` names where it came from in error messages."""
    try:
        raw = tomllib.loads(data_bytes.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CardError(f"dataset card {path} is not valid TOML: {e}") from None

    def need(table: Mapping[str, Any], key: str, kind, where: str):
        if key not in table:
            raise CardError(f"dataset card {path}: missing field {where}{key}")
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CardError(f"dataset card {path}: field {where}{key} must be {kind.__name__}, got {value!r}")
        return value

    def table(value, where: str) -> dict:
        if not isinstance(value, dict):
            raise CardError(f"dataset card {path}: field {where} must be a table, got {value!r}")
        return value

    version = need(raw, "format_version", int, "")
    if version != CARD_FORMAT_VERSION:
        raise CardError(f"dataset card {path}: format_version {version} is not supported (expected {CARD_FORMAT_VERSION})")
    gen = need(raw, "generation", dict, "")
    ref = need(raw, "reference", dict, "")
    union = gen.get("union", [])
    if not isinstance(union, list) or not all(isinstance(u, str) and u for u in union):
        raise CardError(f"dataset card {path}: generation.union must be a list of card ids")
    union = tuple(union)
    behavior = "" if union else need(gen, "behavior", str, "generation.")
    transitions = need(gen, "transitions", int, "generation.")
    behavior_kwargs = dict(table(gen.get("behavior_kwargs", {}), "generation.behavior_kwargs"))
    segments: tuple[Segment, ...] = ()
    if not union:
        tables = gen.get("segments", [{}])
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise CardError(f"dataset card {path}: generation.segments must be a non-empty list of tables")
        shares = []
        for k, t in enumerate(tables):
            unknown = set(t) - {"behavior", "behavior_kwargs", "share"}
            if unknown:
                raise CardError(f"dataset card {path}: generation.segments[{k}] has unknown fields {sorted(unknown)}")
            if not isinstance(t.get("behavior", behavior), str):
                raise CardError(f"dataset card {path}: generation.segments[{k}].behavior must be str")
            table(t.get("behavior_kwargs", {}), f"generation.segments[{k}].behavior_kwargs")
            share = t.get("share", 1)
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < float("inf"):
                raise CardError(f"dataset card {path}: generation.segments[{k}].share must be a positive number")
            shares.append(share)
        counts = split_evenly(max(transitions, 0), shares)
        segments = tuple(
            Segment(t.get("behavior", behavior), {**behavior_kwargs, **t.get("behavior_kwargs", {})}, n)
            for t, n in zip(tables, counts)
        )
    workers = gen.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise CardError(f"dataset card {path}: generation.workers must be a positive integer")
    card = Card(
        id=need(raw, "id", str, ""),
        description=need(raw, "description", str, "") if "description" in raw else "",
        datasets=dict(need(raw, "datasets", dict, "")),
        env=need(gen, "env", str, "generation."),
        behavior=behavior,
        behavior_kwargs=behavior_kwargs,
        transitions=transitions,
        seed=need(gen, "seed", int, "generation."),
        reference_min=need(ref, "min_score", float, "reference."),
        reference_max=need(ref, "max_score", float, "reference."),
        expected=dict(table(raw.get("expected", {}), "expected")),
        path=path,
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        recipe_sha256=hashlib.sha256(
            json.dumps({"format_version": version, "id": raw.get("id"), "generation": gen}, sort_keys=True, default=str).encode()
        ).hexdigest(),
        format_version=version,
        raw=raw,
        segments=segments,
        union=union,
        workers=workers,
    )
    if card.transitions <= 0:
        raise CardError(f"dataset card {path}: generation.transitions must be positive, got {card.transitions}")
    if not (np.isfinite(card.reference_min) and np.isfinite(card.reference_max)):
        raise CardError(f"dataset card {path}: reference scores must be finite numbers")
    if card.reference_max == card.reference_min:
        raise CardError(f"dataset card {path}: reference.max_score must differ from reference.min_score")
    if not card.datasets or not all(isinstance(v, str) for v in card.datasets.values()):
        raise CardError(f"dataset card {path}: [datasets] must map dataset ids to environment ids")
    return card


@functools.lru_cache(maxsize=None)
def load_cards() -> dict[str, Card]:
    """Every card in the package, keyed by card id."""
    cards = {}
    for path in sorted(meta_dir().glob("*.toml")):
        card = parse_card(path)
        if path.stem != card.id:
            raise CardError(f"dataset card {path}: file name must be the card id {card.id!r}.toml")
        cards[card.id] = card
    return cards


def recipe_key(card: Card) -> str:
    """The hash a stored copy must carry to be ``card``'s data: the card's recipe (its id, format and
    ``[generation]`` table, and the size of a variant), with a union's members' recipes folded in.

    Editing a card's description, reference scores or ``[expected]`` statistics keeps its cached
    data valid; editing how the data is made (behavior, seed, size, members) does not.
    """
    if not card.union:
        weights = [_file_digest(seg.behavior_kwargs["weights"]) for seg in card.segments if "weights" in seg.behavior_kwargs]
        if not weights:
            return card.recipe_sha256
        # a behavior's weights file is part of the recipe: new weights under the same name are new data
        return hashlib.sha256(":".join([card.recipe_sha256] + weights).encode()).hexdigest()
    cards = load_cards()
    members = [cards[u] for u in card.union if u in cards]
    if card.is_variant:
        members = [m.resized(n) for m, n in zip(members, split_evenly(card.transitions, [m.transitions for m in members]))]
    return hashlib.sha256(":".join([card.recipe_sha256] + [recipe_key(m) for m in members]).encode()).hexdigest()


def _file_digest(name: str) -> str:
    """sha256 of a behavior's weights file, found where the behavior loads it (:func:`weights_path`)."""
    from offcoord.fileio import sha256_file

    path = weights_path(name)
    return sha256_file(path) if path.is_file() else f"missing:{name}"
