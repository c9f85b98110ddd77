"""The audit log of one organization: its page, its JSON API and its CSV and JSON exports."""
