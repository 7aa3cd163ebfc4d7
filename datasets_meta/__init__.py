"""Dataset cards (TOML) and small behavior-policy weights, shipped as package data."""
