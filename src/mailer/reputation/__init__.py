"""The reputation guard: bulk sending pauses when bounce or complaint rates get dangerous."""
