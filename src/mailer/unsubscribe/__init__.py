"""One-click unsubscribe (RFC 8058): signed tokens in `tokens`."""
