"""Pages to import a git history and follow its progress."""
