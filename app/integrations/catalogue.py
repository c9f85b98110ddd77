"""The kinds of integration a user can connect, each with its settings schema.

A setting marked secret is encrypted at rest, never shown again and never returned by the API.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    type: str = "string"  # string, url, integer, boolean, headers
    required: bool = False
    secret: bool = False
    default: object = None
    help: str = ""


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    description: str
    settings: tuple

    def setting(self, name):
        return next((setting for setting in self.settings if setting.name == name), None)

    def json_schema(self):
        types = {"string": "string", "url": "string", "integer": "integer", "boolean": "boolean", "headers": "object"}
        properties = {}
        for setting in self.settings:
            schema = {"type": types[setting.type], "title": setting.label, "description": setting.help}
            if setting.type == "url":
                schema["format"] = "uri"
            if setting.secret:
                schema["writeOnly"] = True
            if setting.default is not None:
                schema["default"] = setting.default
            properties[setting.name] = schema
        required = [setting.name for setting in self.settings if setting.required]
        return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


CATALOGUE = {
    kind.name: kind
    for kind in (
        Kind(
            "slack",
            "Slack incoming webhook",
            "Posts messages to a Slack channel (or any Slack-compatible incoming webhook).",
            (
                Setting(
                    "webhook_url", "Webhook URL", "url", required=True, secret=True, help="https://hooks.slack.com/…"
                ),
            ),
        ),
        Kind(
            "http",
            "Generic HTTP",
            "A base URL with headers or a bearer token, for http_request and webhook steps.",
            (
                Setting(
                    "base_url", "Base URL", "url", required=True, help="Step URLs that are paths are joined to it."
                ),
                Setting("headers", "Headers", "headers", secret=True, help="A JSON object of headers sent every time."),
                Setting("bearer_token", "Bearer token", secret=True, help="Sent as 'Authorization: Bearer TOKEN'."),
                Setting("signing_secret", "Signing secret", secret=True, help="Signs webhook step deliveries."),
            ),
        ),
        Kind(
            "smtp",
            "SMTP",
            "Sends email for notify steps.",
            (
                Setting("host", "Host", required=True),
                Setting("port", "Port", "integer", default=587),
                Setting("username", "User name"),
                Setting("password", "Password", secret=True),
                Setting("use_tls", "Use STARTTLS", "boolean", default=True),
                Setting("from_address", "From address", required=True),
            ),
        ),
        Kind(
            "github",
            "GitHub token",
            "A personal access token for the GitHub API.",
            (
                Setting("token", "Token", required=True, secret=True),
                Setting("api_url", "API URL", "url", default="https://api.github.com", help="For GitHub Enterprise."),
            ),
        ),
        Kind(
            "s3",
            "S3-compatible storage",
            "A bucket on AWS S3, MinIO or another S3-compatible service.",
            (
                Setting(
                    "endpoint_url", "Endpoint URL", "url", required=True, help="https://s3.eu-west-1.amazonaws.com"
                ),
                Setting("region", "Region", default="us-east-1"),
                Setting("bucket", "Bucket", required=True),
                Setting("access_key_id", "Access key id", required=True),
                Setting("secret_access_key", "Secret access key", required=True, secret=True),
            ),
        ),
    )
}
