"""What keeps the service running: the model repository and its versions (repository, versions) and who
may run model work when (admission). What is measured is service.telemetry's."""
