"""What each kind of integration does: test its connection, and the calls steps make with it.

All network calls go through app.integrations.outbound, so the address checks apply to them.
"""

import datetime
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import quote, urljoin, urlsplit

from app.integrations import outbound

logger = logging.getLogger(__name__)

TEST_TIMEOUT_SECONDS = 10


def test_connection(kind, settings):
    """Try the integration once; return (ok, message). Messages never contain a secret."""
    testers = {"slack": _test_slack, "http": _test_http, "smtp": _test_smtp, "github": _test_github, "s3": _test_s3}
    try:
        return testers[kind](settings)
    except outbound.OutboundError as error:
        return False, str(error)
    except (OSError, smtplib.SMTPException) as error:
        return False, f"Connection failed: {type(error).__name__}: {error}"


def _status_result(response, what):
    if 200 <= response.status < 300:
        return True, f"{what} answered {response.status}."
    return False, f"{what} answered {response.status}; check the settings."


def _test_slack(settings):
    response = slack_post(settings, "Floyo connection test.", TEST_TIMEOUT_SECONDS)
    return _status_result(response, "The webhook")


def _test_http(settings):
    url, headers = http_target(settings, None)
    response = outbound.request("GET", url, headers=headers, timeout=TEST_TIMEOUT_SECONDS)
    if response.status < 400:
        return True, f"{urlsplit(url).netloc} answered {response.status}."
    return False, f"{urlsplit(url).netloc} answered {response.status}; check the URL and credentials."


def _test_github(settings):
    url = settings.get("api_url", "https://api.github.com").rstrip("/") + "/user"
    headers = {"Authorization": f"Bearer {settings['token']}", "Accept": "application/vnd.github+json"}
    response = outbound.request("GET", url, headers=headers, timeout=TEST_TIMEOUT_SECONDS)
    if response.status == 200:
        body = response.json_or_text()
        login = body.get("login") if isinstance(body, dict) else None
        return True, f"Signed in to GitHub as {login}." if login else "GitHub accepted the token."
    return _status_result(response, "GitHub")


def _test_smtp(settings):
    with open_smtp(settings, TEST_TIMEOUT_SECONDS) as connection:
        connection.noop()
    return True, f"Connected to {settings['host']}:{settings.get('port', 587)}."


def _test_s3(settings):
    url, headers = s3_signed_request(settings, "HEAD", "")
    response = outbound.request("HEAD", url, headers=headers, timeout=TEST_TIMEOUT_SECONDS)
    return _status_result(response, f"Bucket {settings['bucket']}")


def slack_post(settings, text, timeout):
    body = json.dumps({"text": text}).encode()
    return outbound.request(
        "POST", settings["webhook_url"], headers={"Content-Type": "application/json"}, body=body, timeout=timeout
    )


def http_target(settings, url):
    """Join a step's URL (absolute, a path, or None) to the integration's base URL, with its auth headers."""
    base = settings["base_url"]
    target = urljoin(base if base.endswith("/") or not url else base + "/", url.lstrip("/")) if url else base
    if url and urlsplit(url).scheme:
        target = url
    headers = dict(settings.get("headers") or {})
    if settings.get("bearer_token"):
        headers["Authorization"] = f"Bearer {settings['bearer_token']}"
    return target, headers


def open_smtp(settings, timeout):
    """Connect (and STARTTLS, and log in) to the integration's SMTP server."""
    port = int(settings.get("port") or 587)
    connection = outbound.open_smtp_checked(settings["host"], port, timeout)
    try:
        connection.ehlo()
        if settings.get("use_tls", True):
            connection.starttls(context=ssl.create_default_context())
            connection.ehlo()
        if settings.get("username"):
            connection.login(settings["username"], settings.get("password", ""))
    except BaseException:
        connection.close()
        raise
    return connection


def build_email(sender, recipients, subject, body):
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    return message


def s3_signed_request(settings, method, key, payload=b"", now=None):
    """Return (url, headers) for an S3 request signed with AWS Signature Version 4 (path-style)."""
    now = now or datetime.datetime.now(datetime.UTC)
    endpoint = settings["endpoint_url"].rstrip("/")
    region = settings.get("region") or "us-east-1"
    path = "/" + quote(settings["bucket"]) + ("/" + quote(key) if key else "")
    host = urlsplit(endpoint).netloc
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed_names = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, path, "", *(f"{name}:{headers[name]}" for name in sorted(headers)), "", signed_names, payload_hash]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key_bytes = ("AWS4" + settings["secret_access_key"]).encode()
    for part in (day, region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={settings['access_key_id']}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    del headers["host"]
    return endpoint + path, headers
