"""Saved CloudWatch Logs Insights queries over every Reflex function's log group (log aggregation).

The functions log JSON through Powertools: `message`, `level`, `service` (the reaction) and the extra keys
at the top level. The pipeline writes one `decision` line per decision with the whole audit record under
`audit`, and one `rejected malformed trigger` line (with `errors`) per rejected event.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_logs as logs
from constructs import Construct

# name -> the query; one QueryDefinition each, named `reflex-<stage>/<name>`.
QUERIES: dict[str, logs.QueryStringProps] = {
    "audit-trail": logs.QueryStringProps(
        fields=["@timestamp", "service", "audit.policy", "audit.target", "audit.operation", "audit.outcome",
                "audit.who", "audit.dry_run", "audit.detail", "audit.id", "audit.correlation_id"],
        filter_statements=['message = "decision"'],
        sort="@timestamp desc", limit=1000),
    "decisions-by-outcome": logs.QueryStringProps(
        filter_statements=['message = "decision"'],
        stats_statements=["count(*) as decisions by service, audit.outcome"],
        sort="decisions desc"),
    "rejected-events": logs.QueryStringProps(
        fields=["@timestamp", "service", "errors", "raw_ref", "correlation_id"],
        filter_statements=['message = "rejected malformed trigger"'],
        sort="@timestamp desc", limit=1000),
    "errors": logs.QueryStringProps(
        fields=["@timestamp", "service", "level", "message", "exception", "exception_name", "@message"],
        filter_statements=['level = "ERROR" or level = "CRITICAL" or @message like /Task timed out/ '
                           "or @message like /Runtime.ExitError/"],
        sort="@timestamp desc", limit=1000),
}


@dataclass(frozen=True)
class MonitoringQueriesProps:
    stage: str
    log_groups: tuple[logs.ILogGroup, ...]


class MonitoringQueries(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: MonitoringQueriesProps) -> None:
        super().__init__(scope, construct_id)
        self.definitions = {
            name: logs.QueryDefinition(
                self, _construct_id(name),
                query_definition_name=f"reflex-{props.stage}/{name}",
                query_string=logs.QueryString(
                    fields=query.fields, filter_statements=query.filter_statements,
                    stats_statements=query.stats_statements, sort=query.sort, limit=query.limit),
                log_groups=list(props.log_groups),
            )
            for name, query in QUERIES.items()
        }


def _construct_id(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
