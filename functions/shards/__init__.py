"""Shard rebalancing: the shard map, the router applications import, the planner, the mover and the reaction."""
