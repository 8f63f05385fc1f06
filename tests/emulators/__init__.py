"""In-process emulators of the registries registryd reads, for tests (loopback only)."""
