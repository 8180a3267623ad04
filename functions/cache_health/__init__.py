"""The cache health collector: Redis INFO to CloudWatch metrics."""
