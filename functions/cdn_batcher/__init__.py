"""The CloudFront batcher: coalesces queued CDN paths into one invalidation per distribution."""
