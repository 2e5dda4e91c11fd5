"""The send path: claim → render → build → send → record (docs/architecture.md,
"One recipient's path")."""
