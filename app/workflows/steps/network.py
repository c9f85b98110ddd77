"""Steps that send something: http_request, webhook and notify (email or Slack)."""

import hashlib
import hmac
import json
import logging
import smtplib
import time

from flask import current_app

from app.integrations import connectors, outbound

logger = logging.getLogger(__name__)

OUTPUT_TEXT_LIMIT = 64 * 1024
SIGNATURE_HEADER = "Floyo-Signature"


def _failed(message, reason="error"):
    from app.workflows.steps import StepFailed

    return StepFailed(message, reason)


def _send(context, method, url, headers, body):
    """Send through the checked outbound client on the step's thread; map its errors to step failures."""
    started = time.monotonic()
    try:
        response = context.in_thread(
            lambda: outbound.request(method, url, headers=headers, body=body, timeout=context.timeout)
        )
    except outbound.OutboundTimeout as error:
        raise _failed(f"timeout: {error}", "timeout") from None
    except outbound.OutboundBlocked as error:
        raise _failed(str(error), "blocked") from None
    except outbound.OutboundError as error:
        raise _failed(str(error)) from None
    elapsed = (time.monotonic() - started) * 1000
    for hop in response.redirects:
        context.log(f"redirected from {hop}")
    context.log(f"{method} {response.url} → {response.status} in {elapsed:.0f} ms")
    return response


def _body_output(response):
    value = response.json_or_text()
    if isinstance(value, str) and len(value) > OUTPUT_TEXT_LIMIT:
        return value[:OUTPUT_TEXT_LIMIT]
    return value


def run_http_request(context):
    config = context.config
    headers = dict(config.get("headers") or {})
    url = config.get("url")
    if config.get("integration"):
        settings = context.integration_settings(config["integration"], ("http",))
        url, integration_headers = connectors.http_target(settings, url)
        # Integration headers (tokens) go on the wire only; the attempt's input keeps the step's own headers.
        headers = {**integration_headers, **headers}
    if not isinstance(url, str) or not url:
        raise _failed("The URL is empty after filling in its template; check the values it refers to.")
    if config.get("query"):
        from urllib.parse import urlencode

        url += ("&" if "?" in url else "?") + urlencode({key: str(value) for key, value in config["query"].items()})
    body = config.get("body")
    payload = None
    if body is not None and config.get("method", "GET") not in ("GET", "HEAD"):
        if isinstance(body, str):
            payload = body.encode()
        else:
            payload = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
    response = _send(context, config.get("method", "GET"), url, headers, payload)
    output = {"status": response.status, "headers": _safe_headers(response.headers), "body": _body_output(response)}
    expected = config.get("expect_status")
    ok = response.status in expected if expected else 200 <= response.status < 400
    if not ok:
        raise _failed(f"the server answered HTTP {response.status}")
    return output


def _safe_headers(headers):
    keep = ("content-type", "content-length", "location", "etag", "last-modified", "date")
    return {name: value for name, value in headers.items() if name in keep}


def sign(secret, timestamp, body):
    """Return the Floyo-Signature header value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def run_webhook(context):
    config = context.config
    settings = context.integration_settings(config["integration"], ("http",))
    secret = settings.get("signing_secret")
    if not secret:
        raise _failed(f"Integration {config['integration']!r} has no signing secret; set one to send webhooks.")
    url, integration_headers = connectors.http_target(settings, config.get("url"))
    body = json.dumps(config.get("payload"), separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    delivery = f"{context.run_id}-{context.step['id']}-{context.attempt_number}"
    headers = {
        **integration_headers,
        **(config.get("headers") or {}),
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Floyo-Delivery": delivery,
    }
    response = _send(context, "POST", url, headers, body)
    if not 200 <= response.status < 300:
        raise _failed(f"the endpoint answered HTTP {response.status}")
    return {"status": response.status, "delivery": delivery, "body": _body_output(response)}


def run_notify(context):
    config = context.config
    if config["channel"] == "slack":
        settings = context.integration_settings(config["integration"], ("slack",))
        text = config.get("body") or config.get("subject") or ""
        response = _send_slack(context, settings, text)
        if not 200 <= response.status < 300:
            raise _failed(f"Slack answered HTTP {response.status}")
        return {"channel": "slack", "status": response.status}
    recipients = config["to"] if isinstance(config["to"], list) else [config["to"]]
    recipients = [str(item) for item in recipients if item]
    if not recipients:
        raise _failed("No email recipient after filling in the templates of 'to'.")
    subject, body = str(config.get("subject") or ""), str(config.get("body") or "")
    if config.get("integration"):
        settings = context.integration_settings(config["integration"], ("smtp",))
        message = connectors.build_email(settings["from_address"], recipients, subject, body)
        _smtp_call(context, lambda: _send_with(connectors.open_smtp(settings, context.timeout), message))
        backend = f"smtp {settings['host']}"
    elif current_app.config["MAIL_BACKEND"] == "smtp":
        message = connectors.build_email(current_app.config["MAIL_FROM"], recipients, subject, body)
        _smtp_call(context, lambda: _send_with(_open_configured_smtp(context.timeout), message))
        backend = f"smtp {current_app.config['SMTP_HOST']}"
    else:
        # The console backend, for development: the message goes to the step log and nowhere else.
        context.log(f"To: {', '.join(recipients)}\nSubject: {subject}\n\n{body}")
        backend = "console"
    context.log(f"email sent to {len(recipients)} recipient(s) through {backend}")
    return {"channel": "email", "to": recipients, "subject": subject, "backend": backend.split()[0]}


def _send_slack(context, settings, text):
    body = json.dumps({"text": text}).encode()
    return _send(context, "POST", settings["webhook_url"], {"Content-Type": "application/json"}, body)


def _send_with(connection, message):
    with connection:
        connection.send_message(message)


def _open_configured_smtp(timeout):
    """Connect to the operator's SMTP server (SMTP_* settings); it is trusted, so no address check."""
    import ssl

    config = current_app.config
    connection = smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=timeout)
    connection.ehlo()
    if config["SMTP_USE_TLS"]:
        connection.starttls(context=ssl.create_default_context())
        connection.ehlo()
    if config["SMTP_USERNAME"]:
        connection.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
    return connection


def _smtp_call(context, func):
    try:
        context.in_thread(func)
    except outbound.OutboundBlocked as error:
        raise _failed(str(error), "blocked") from None
    except TimeoutError:
        raise _failed(f"timeout: the SMTP server did not answer in {context.timeout:g} seconds", "timeout") from None
    except (OSError, smtplib.SMTPException, outbound.OutboundError) as error:
        raise _failed(f"sending email failed: {type(error).__name__}: {error}") from None
