"""Error reporting to Sentry when SENTRY_DSN is set; the sentry-sdk package is imported only then.

sentry-sdk enables its Flask, RQ and logging integrations by itself when those packages are
installed. Every `logger.exception` (the 500 handler logs one) and every failed RQ job becomes an
event. sentry-sdk (2.76) sends no personal data unless send_default_pii or data_collection turns it on.
"""

import logging

logger = logging.getLogger(__name__)


def init_app(app):
    dsn = app.config["SENTRY_DSN"]
    if not dsn:
        return
    try:
        import sentry_sdk
    except ImportError:
        raise RuntimeError(
            "SENTRY_DSN is set but the sentry-sdk package is missing. "
            "Install it with 'pip install -r requirements.txt', or unset SENTRY_DSN."
        ) from None
    sentry_sdk.init(dsn=dsn)
    logger.info("error reporting to Sentry is on")
