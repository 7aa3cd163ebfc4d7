"""Speed benchmarks: each prints offcoord's numbers beside a peer measured in the same run."""
