"""The PostgreSQL performance advisor and the runaway-query reaction (docs/runbooks/database.md)."""
