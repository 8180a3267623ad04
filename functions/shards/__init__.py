"""Shard rebalancing: the shard map, the router applications import, and the mover."""
