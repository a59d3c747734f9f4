"""Fault-injection evaluation of the production core (``make eval``): see ``evaluation.run``."""
