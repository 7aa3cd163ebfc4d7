"""offcoord's environments: one PettingZoo ParallelEnv class per task, views next to their env."""
