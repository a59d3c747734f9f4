"""Alerts to incidents: dedup, topology-aware grouping, lifecycle, and root-cause ranking."""
