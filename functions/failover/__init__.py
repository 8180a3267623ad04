"""The regional failover reaction (Aurora Global Database, Route 53 failover records)."""
