"""What a user runs to deploy: work pool and queues, or serving every flow locally."""
