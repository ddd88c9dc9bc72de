"""Running jobs: claiming one, running it (in a worker or inline with run_to_completion),
its heartbeat, bookkeeping and outcome, retries, splitting and the next job's size."""
