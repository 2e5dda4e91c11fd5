"""The send path: claim → render → build → send → record (DESIGN.md §4)."""
