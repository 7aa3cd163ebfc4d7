"""offcoord_agents: reference agents (MOMA-PPO and the paper's baselines) trained against offcoord's public API.

The algorithms land with their own issues; this package depends on ``offcoord`` only through
``offcoord``'s public functions (``load_dataset``, ``evaluate``, ``make``, ``normalized_score``).
"""

__version__ = "0.1.0"
