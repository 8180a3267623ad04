"""The drills reaction: validates restored copies (AWS Backup restore testing, on-demand drills), measures RTO/RPO."""
