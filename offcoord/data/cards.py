"""Dataset cards: the small TOML files in ``datasets_meta/`` that say how each dataset is made.

A card describes one *stored copy* (one behavior); it may serve several dataset ids, one per
observability view of the same trajectories (``ant-expert-fo`` and ``ant-expert-po``).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from offcoord.errors import CardError

CARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Card:
    """A parsed dataset card. ``sha256`` is the hash of the card file's bytes (recorded in results)."""

    id: str
    description: str
    datasets: Mapping[str, str]  # dataset id -> environment id (its observation view)
    env: str  # environment the behavior runs in (any view of the task; the stored state is global)
    behavior: str
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


def meta_dir() -> Path:
    """The directory holding the cards (``datasets_meta/`` in a checkout, packaged in a wheel)."""
    return Path(str(resources.files("offcoord.datasets_meta")))


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

    version = need(raw, "format_version", int, "")
    if version != CARD_FORMAT_VERSION:
        raise CardError(f"dataset card {path}: format_version {version} is not supported (expected {CARD_FORMAT_VERSION})")
    gen = need(raw, "generation", dict, "")
    ref = need(raw, "reference", dict, "")
    card = Card(
        id=need(raw, "id", str, ""),
        description=raw.get("description", ""),
        datasets=dict(need(raw, "datasets", dict, "")),
        env=need(gen, "env", str, "generation."),
        behavior=need(gen, "behavior", str, "generation."),
        behavior_kwargs=dict(gen.get("behavior_kwargs", {})),
        transitions=need(gen, "transitions", int, "generation."),
        seed=need(gen, "seed", int, "generation."),
        reference_min=need(ref, "min_score", float, "reference."),
        reference_max=need(ref, "max_score", float, "reference."),
        expected=dict(raw.get("expected", {})),
        path=path,
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        format_version=version,
        raw=raw,
    )
    if card.transitions <= 0:
        raise CardError(f"dataset card {path}: generation.transitions must be positive, got {card.transitions}")
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
