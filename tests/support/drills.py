"""The drills' AWS world for the tests: the simulator's (moto RDS/DynamoDB, Stubber for AWS Backup and the Data API)."""

from simulator.drill_world import (  # noqa: F401
    DRILL_SG,
    PLAN_ARN,
    PROD_SG,
    SECRET,
    BackupStub,
    DataApiStub,
    cluster_arn,
    create_rds,
    production_state,
    restore_copy,
    restore_event,
    restore_job,
    table_arn,
)
