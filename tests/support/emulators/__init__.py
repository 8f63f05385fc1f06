"""Emulated registry servers (Consul, Kubernetes, Nacos) on loopback, for the faults a real
server cannot be made to show; their own tests are in tests/emulators/."""
