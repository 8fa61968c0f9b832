"""Sandbox (demo) stand-ins for the outside world: fake Graph API, demo enqueuer."""
