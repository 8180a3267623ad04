"""Reflex core: the one pipeline every reaction runs (parse, match, plan, guard, execute, verify, record)."""
