"""The worker process: runs chunk jobs, the reconciler, and shuts down gracefully."""
