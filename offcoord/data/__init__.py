"""Datasets: cards, the trajectory store, generation, the Dataset object, Minari exchange."""

from __future__ import annotations

from pathlib import Path

from offcoord.fileio import cache_dir
from offcoord.data.cards import Card
from offcoord.data.dataset import Batch, Dataset, Episode
from offcoord.data.generate import checked_manifest, generate, store_path
from offcoord.data.store import MANIFEST, open_columns, read_manifest
from offcoord.errors import UnknownIdError

__all__ = ["Batch", "Dataset", "Episode", "build", "load_dataset", "open_dataset", "verify_dataset"]


def _resolve(dataset_id: str, size: int | None = None, view: bool = False) -> tuple[str, Card]:
    from offcoord.registry import dataset_card

    if "@" in dataset_id:  # "ant-expert-po@50000": the size-variant spelling used by the CLI and in cache names
        dataset_id, _, count = dataset_id.rpartition("@")
        if not (count.isascii() and count.isdigit()) or (size is not None and size != int(count)):
            raise ValueError(f"dataset id {dataset_id}@{count}: the part after '@' must be the size in transitions")
        size = int(count)
    card = dataset_card(dataset_id)
    if dataset_id not in card.datasets:  # a card id: it names the store, which is all building and verifying need
        if view:  # loading needs one of its views
            raise UnknownIdError("dataset", dataset_id, card.datasets,
                                 f"{dataset_id!r} is a dataset card, which builds the datasets "
                                 f"{', '.join(repr(d) for d in card.datasets)}: load one of them")
        dataset_id = next(iter(card.datasets))
    if size is not None:
        card = card.resized(size)
    return dataset_id, card


def build(
    dataset_id: str, force: bool = False, progress: bool | None = None, root: Path | None = None,
    size: int | None = None, workers: int | None = None,
) -> Path:
    """Generate the stored copy behind ``dataset_id`` (a no-op when it is cached, unless ``force``).

    ``size``: build a variant with that many transitions instead of the card's count (cached
    separately); ``workers``: generation processes (default: all cores for large datasets).
    """
    _, card = _resolve(dataset_id, size)
    return generate(card, root=root, force=force, progress=progress, workers=workers)


def _open(dataset_id: str, root: Path | None, full_check: bool, auto_build: bool, progress: bool | None, size: int | None = None,
          view: bool = False):
    dataset_id, card = _resolve(dataset_id, size, view)
    path = store_path(card, root)
    if not (path / MANIFEST).exists():
        if not auto_build:
            raise FileNotFoundError(f"dataset {dataset_id} is not in the cache {path.parent}; build it with: offcoord generate {card.id}")
        generate(card, root=root, progress=progress)
    return dataset_id, card, path, checked_manifest(card, path, full=full_check)


def load_dataset(
    dataset_id: str, *, size: int | None = None, root: Path | None = None, progress: bool | None = None, auto_build: bool = True
) -> Dataset:
    """Load a dataset by id (``offcoord.list_datasets()``), building it from its card on first use.

    ``size`` asks for a variant with that many transitions (the same recipe, the card's seed;
    the first ``size`` transitions in episode order of each behavior segment), cached apart from
    the full copy; for tests and quick experiments. ``None``: the card's size.

    The arrays are memory-mapped from the cache (``$OFFCOORD_DATA_DIR`` or the user cache dir);
    per-agent observations come from the environment's own view function. A missing, truncated
    or corrupted cache file raises :class:`offcoord.errors.DatasetCorruptedError` naming the file
    and the command that rebuilds it.
    """
    dataset_id, card, path, manifest = _open(dataset_id, root, False, auto_build, progress, size, view=True)
    return open_dataset(path, card, dataset_id, manifest)


def open_dataset(path: Path, card: Card, dataset_id: str, manifest: dict | None = None) -> Dataset:
    """Open the store at ``path`` (built from ``card``) as the view ``dataset_id`` of that card."""
    from offcoord.registry import make

    manifest = manifest or read_manifest(path, card.id)
    env_id = card.datasets[dataset_id]
    env = make(env_id)  # only for its layout, view and termination rule, which outlive it
    env.close()
    columns = open_columns(path, card.id, manifest)
    return Dataset(dataset_id, env_id, card, columns, env.layout, env.view, manifest, path, env.termination_rule)


def verify_dataset(dataset_id: str, *, size: int | None = None, root: Path | None = None) -> dict:
    """Re-hash every file of a cached dataset against its manifest; return the manifest's statistics."""
    _, card, path, manifest = _open(dataset_id, root, True, False, None, size)
    open_columns(path, card.id, manifest)
    return manifest["statistics"]
