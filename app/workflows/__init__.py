"""Workflows: definitions with versions, runs executed by RQ workers, triggers and the scheduler."""
