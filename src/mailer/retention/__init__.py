"""Data retention: old finished batches' recipients and events, old metrics and dead
letters are deleted in small transactions (RETENTION_DAYS; `mailer purge`)."""
