"""What keeps the service running: the model repository and its versions (repository, versions), who may
run model work when (admission) and what is measured (metrics)."""
