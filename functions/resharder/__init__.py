"""The resharder: ElastiCache (Redis OSS / Valkey) cluster-mode shards added, removed and rebalanced."""
