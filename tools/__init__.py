"""Supernoba's tools: the local stack, service launcher, provisioning, console, load and benchmarks."""
