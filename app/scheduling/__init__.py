"""Scheduling: task validation, claiming, ranks, election, failure detection."""
