"""One module per algorithm; each reads top to bottom: config, networks, update, policy."""
