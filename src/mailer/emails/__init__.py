"""POST /emails (one email, or up to 50 addresses, in the transactional lane) and message
lookup (GET /emails/:id, GET /emails)."""
