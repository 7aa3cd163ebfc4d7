"""Exchange with Minari, the offline-RL ecosystem's dataset format (exchange only; not the training path).

Minari has no multi-agent support, so a multi-agent dataset is written as one "agent" whose
observation space is a ``Dict`` keyed by agent name plus ``"state"`` (the global state), and
whose action space is a ``Dict`` keyed by agent name. Per-transition behavior facts (such as
the reacher expert's strategy) go into the step infos as ``"extra_<name>"``. Minari silently
drops reference scores when no Gymnasium env spec is given (offcoord environments are PettingZoo
environments, so there is none): they are written into the metadata explicitly afterwards.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
from gymnasium import spaces

from offcoord.data.dataset import Dataset
from offcoord.data.generate import dataset_statistics

FORMAT_KEY = "offcoord"  # metadata key holding what offcoord needs to rebuild the store


def _require_minari():
    try:
        import minari  # noqa: F401
        from minari.data_collector import EpisodeBuffer
    except ImportError:
        raise ImportError('Minari exchange needs minari with HDF5 storage: pip install "offcoord[minari]"') from None
    return minari, EpisodeBuffer


def default_minari_id(dataset: Dataset) -> str:
    return f"offcoord/{dataset.id}-v0"


def export_minari(dataset: Dataset, minari_id: str | None = None, overwrite: bool = False, max_episodes: int | None = None):
    """Write ``dataset`` as a local Minari dataset (under Minari's datasets path) and return it.

    ``max_episodes`` exports only the first episodes (Minari writes one HDF5 group per episode,
    about 150 episodes/s here, so a 20,000-episode dataset takes minutes).
    """
    minari, EpisodeBuffer = _require_minari()
    minari_id = minari_id or default_minari_id(dataset)
    if minari_id in minari.list_local_datasets():
        if not overwrite:
            raise FileExistsError(f"a local Minari dataset {minari_id!r} exists; pass overwrite=True (--force) to replace it")
        minari.delete_dataset(minari_id)

    agents = dataset.agents
    state_space = spaces.Box(-np.inf, np.inf, shape=dataset.states.shape[1:], dtype=np.float32)
    observation_space = spaces.Dict({**{a: dataset.view.observation_spaces[a] for a in agents}, "state": state_space})
    env = _make_env(dataset.env_id)
    action_space = spaces.Dict({a: env.action_space(a) for a in agents})

    buffers = []
    for ep in itertools.islice(dataset.episodes(), max_episodes):
        states = np.concatenate([ep.states, ep.next_states[-1:]])
        obs = dataset.view(states)
        infos = {f"extra_{k}": np.concatenate([v[:1], v]) for k, v in ep.extras.items()}  # reset info + one per step
        buffers.append(
            EpisodeBuffer(
                id=ep.index,
                observations={**obs, "state": states},
                actions={a: np.asarray(ep.actions[a]) for a in agents},
                rewards=np.asarray(ep.rewards),
                terminations=np.asarray(ep.terminations),
                truncations=np.asarray(ep.truncations),
                infos=infos,
            )
        )
    low, high = dataset.card.reference_min, dataset.card.reference_max
    with warnings.catch_warnings():
        # Minari warns that there is no Gymnasium env spec / eval env / author email: expected here.
        warnings.simplefilter("ignore", UserWarning)
        md = minari.create_dataset_from_buffers(
            dataset_id=minari_id,
            buffer=buffers,
            observation_space=observation_space,
            action_space=action_space,
            algorithm_name=dataset.card.behavior,
            author="offcoord",
            description=dataset.card.description or dataset.id,
            data_format="hdf5",
        )
    md.storage.update_metadata(
        {
            "ref_min_score": float(low),
            "ref_max_score": float(high),
            FORMAT_KEY: {
                "dataset_id": dataset.id,
                "env_id": dataset.env_id,
                "card_id": dataset.card.id,
                "card_sha256": dataset.card.sha256,
                "card_toml": dataset.card.path.read_text(),  # self-describing: how the data was made
                "joint_action_dtype": dataset.joint_actions.dtype.str,
                "extras": {k: v.dtype.str for k, v in dataset.extras.items()},
            },
        }
    )
    return minari.load_dataset(minari_id)


def _make_env(env_id: str):
    from offcoord.registry import make

    return make(env_id)


def import_minari(minari_id: str, root: Path) -> Dataset:
    """Read a Minari dataset written by :func:`export_minari` back into an offcoord store under ``root``.

    The store is written with the same atomic writer as generated datasets and opened as a
    :class:`Dataset` with the original environment's layout and view.
    """
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes, recipe_key
    from offcoord.data.store import StoreWriter

    minari, _ = _require_minari()
    md = minari.load_dataset(minari_id)
    meta = md.storage.metadata.get(FORMAT_KEY)
    if not meta:
        raise ValueError(f"Minari dataset {minari_id!r} was not written by offcoord.export_minari (no {FORMAT_KEY!r} metadata)")
    card = card_from_bytes(meta["card_toml"].encode(), Path(md.spec.data_path) / "metadata.json")
    env = _make_env(meta["env_id"])
    layout = env.layout
    episodes = list(md.iterate_episodes())
    if not episodes:
        raise ValueError(f"Minari dataset {minari_id!r} holds no episodes")
    lengths = np.array([len(ep.rewards) for ep in episodes], dtype=np.int64)
    n = int(lengths.sum())
    state_dim = episodes[0].observations["state"].shape[1]
    columns = {
        "states": ((n, state_dim), np.float32),
        "next_states": ((n, state_dim), np.float32),
        "actions": ((n, layout.joint_action_dim), np.dtype(meta["joint_action_dtype"])),
        "rewards": ((n,), np.float32),
        "terminations": ((n,), np.bool_),
        "truncations": ((n,), np.bool_),
        "episode_starts": ((len(episodes),), np.int64),
        **{f"extra_{k}": ((n,), np.dtype(d)) for k, d in meta["extras"].items()},
    }
    target = Path(root) / "imported" / minari_id.replace("/", "__")
    with StoreWriter(target, columns) as writer:
        cols = writer.arrays
        cols["episode_starts"][:] = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        t = 0
        for ep, length in zip(episodes, lengths):
            s = slice(t, t + length)
            cols["states"][s] = ep.observations["state"][:-1]
            cols["next_states"][s] = ep.observations["state"][1:]
            cols["actions"][s] = layout.join(ep.actions, dtype=cols["actions"].dtype)
            cols["rewards"][s] = ep.rewards
            cols["terminations"][s] = ep.terminations
            cols["truncations"][s] = ep.truncations
            for k in meta["extras"]:
                cols[f"extra_{k}"][s] = ep.infos[f"extra_{k}"][1:]
            t += length
        stats = dataset_statistics(cols)
        path = writer.commit({"card_id": card.id, "card_sha256": card.sha256, "recipe_sha256": recipe_key(card), "source": f"minari:{minari_id}", "statistics": stats})
    return open_dataset(path, card, meta["dataset_id"])
