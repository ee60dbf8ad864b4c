"""Fault tests: training killed with SIGKILL and resumed, proposal caches killed midway, killed `detect run`."""
