"""The `scaler` reaction: ECS services, EC2 Auto Scaling groups and Aurora read replicas."""
