"""Blue/green promotion: the `promoter` reaction and the steps of its Step Functions workflow."""
