"""Integrations: connections to outside services (Slack, HTTP, SMTP, GitHub, S3) that workflow steps use."""
