"""Shard rebalancing: planner, mover, router, reaction."""
