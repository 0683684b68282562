"""Logs, metrics and traces shared by every HELIOS service."""
