"""Algorithm names -> classes (``offcoord-agents train NAME ...``)."""

from __future__ import annotations

import importlib

ALGORITHMS = {
    "ibc": "offcoord_agents.algos.ibc:IBC",
    "itd3bc": "offcoord_agents.algos.itd3bc:ITD3BC",
    "iql": "offcoord_agents.algos.iql:IQL",
    "maiql": "offcoord_agents.algos.maiql:MAIQL",
    "maiql-ft": "offcoord_agents.algos.maiql_ft:MAIQLFT",
    "icql": "offcoord_agents.algos.icql:ICQL",
    "omar": "offcoord_agents.algos.omar:OMAR",
    "matd3bc": "offcoord_agents.algos.matd3bc:MATD3BC",
    "momappo": "offcoord_agents.algos.momappo:MOMAPPO",
}


def algorithm_class(name: str):
    if name not in ALGORITHMS:
        import difflib

        close = difflib.get_close_matches(name, ALGORITHMS, n=3)
        raise ValueError(f"unknown algorithm {name!r}; did you mean {close or sorted(ALGORITHMS)}?")
    module, attr = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), attr)
