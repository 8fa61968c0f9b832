"""The sandbox (demo) stack: stand-ins for the outside world on 127.0.0.1 and demo data."""
