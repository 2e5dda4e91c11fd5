"""The dead letter store: chunks whose transient failures exhausted JOB_ATTEMPTS."""
