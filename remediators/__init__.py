"""Incident updates to guarded actions and ticket events, under policies from topology.yaml."""
