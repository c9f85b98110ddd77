"""The admin console: users, organizations, statistics, queues, maintenance mode and the audit log."""
