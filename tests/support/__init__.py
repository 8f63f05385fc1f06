"""Helpers that several test folders share: one fake clock, certificates, real processes
(registryd, Envoy, etcd), ServiceEntry documents and the in-process harness."""
