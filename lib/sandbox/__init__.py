"""Sandbox (demo) stack: stand-ins for the outside world on a machine with nothing else on it."""
