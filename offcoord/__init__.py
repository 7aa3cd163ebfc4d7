"""offcoord: a benchmark for the offline multi-agent coordination problem.

>>> import offcoord
>>> env = offcoord.make("coordination-game")            # a PettingZoo ParallelEnv
>>> ds = offcoord.load_dataset("coordination-neutral")   # built from its card on first use
>>> offcoord.normalized_score("coordination-game", 1.0)
1.0
"""

__version__ = "0.1.0"

from offcoord import diagnostics  # noqa: E402,F401
from offcoord.data import Batch, Dataset, Episode, build, load_dataset, verify_dataset  # noqa: E402
from offcoord.errors import (  # noqa: E402
    DatasetCorruptedError,
    DatasetVerificationError,
    EpisodeOverError,
    UnknownIdError,
)
from offcoord.evaluation import EvaluationResult, evaluate  # noqa: E402
from offcoord.registry import list_datasets, list_envs, make, normalized_score, reference_scores  # noqa: E402

__all__ = [
    "Batch",
    "Dataset",
    "DatasetCorruptedError",
    "DatasetVerificationError",
    "Episode",
    "EpisodeOverError",
    "EvaluationResult",
    "UnknownIdError",
    "build",
    "evaluate",
    "list_datasets",
    "list_envs",
    "load_dataset",
    "make",
    "normalized_score",
    "reference_scores",
    "verify_dataset",
]
