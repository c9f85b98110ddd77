"""JSON routes for events."""
