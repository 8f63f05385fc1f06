"""Tests of the registry emulators (:mod:`tests.support.emulators`)."""
