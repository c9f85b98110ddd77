"""Email that Floyo itself sends (verification, password reset, invitations).

MAIL_BACKEND selects the transport: "smtp" sends through the SMTP_* settings, "console" prints the message
to standard output for development, and "memory" keeps it in `outbox(app)` for tests. The console
backend bypasses the logging system on purpose: these messages carry single-use links, and logs
must never hold them.
"""

import logging
import smtplib
import ssl
import sys
from email.message import EmailMessage

from flask import current_app

logger = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 15


class MailError(Exception):
    """The message could not be handed to the SMTP server."""


def outbox(app=None):
    """Return the list of messages the "memory" backend has sent, oldest first."""
    return (app or current_app).extensions.setdefault("floyo_outbox", [])


def send_mail(to, subject, body):
    """Send a plain-text message to one address; raise MailError when SMTP fails."""
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)

    backend = config["MAIL_BACKEND"]
    if backend == "memory":
        outbox().append(message)
    elif backend == "smtp":
        _send_smtp(message)
    else:
        # Headers and the decoded body, so that a link in it can be copied as it is.
        headers = "".join(f"{name}: {message[name]}\n" for name in ("From", "To", "Subject"))
        text = f"--- email (MAIL_BACKEND=console) ---\n{headers}\n{body}\n--- end of email ---"
        print(text, file=sys.stdout, flush=True)
    # The subject only, because the body contains the single-use link.
    logger.info("mail sent backend=%s subject=%r", backend, subject)


def _send_smtp(message):
    config = current_app.config
    try:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=SMTP_TIMEOUT_SECONDS) as connection:
            connection.ehlo()
            if config["SMTP_USE_TLS"]:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if config["SMTP_USERNAME"]:
                connection.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
            connection.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        logger.error("mail sending failed host=%s error=%s", config["SMTP_HOST"], error)
        raise MailError(f"The email could not be sent through {config['SMTP_HOST']}: {error}") from error
