"""JSON routes for patterns and suggestions."""
