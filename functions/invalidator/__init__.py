"""The cache and CDN invalidation reaction: Redis keys, patterns and tags; CloudFront paths and cache tags."""
