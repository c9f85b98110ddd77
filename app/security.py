"""Response headers that protect pages (CSP, HSTS) and the client address behind trusted proxies."""

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

# Scripts and styles come only from static/. HTMX needs no inline script or eval for the
# attributes used here, and its indicator <style> is turned off by the htmx-config meta tag in
# base.html. Plotly's global stylesheet is served as static/plotly.css for the same reason.
# style-src also allows 'unsafe-inline' because plotly.js 4.1.1 still inserts <style> elements
# (per-chart hover and modebar rules) that a static file cannot replace; inline styles cannot
# run code, so scripts stay strict.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HSTS = "max-age=31536000; includeSubDomains"


def init_app(app):
    """Trust TRUSTED_PROXY_COUNT proxies for the client address and scheme, and add the security headers."""
    proxies = app.config["TRUSTED_PROXY_COUNT"]
    if proxies < 0:
        raise RuntimeError(f"Setting TRUSTED_PROXY_COUNT must be 0 or more, got {proxies}")
    if proxies:
        # Each trusted proxy appends one address to X-Forwarded-For; ProxyFix takes the one the
        # outermost trusted proxy saw, so a client cannot spoof its address by sending the header.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    # The remember cookie follows the session cookie: both carry a sign-in.
    app.config["REMEMBER_COOKIE_SECURE"] = bool(
        app.config["REMEMBER_COOKIE_SECURE"] or app.config["SESSION_COOKIE_SECURE"]
    )

    @app.after_request
    def add_security_headers(response):
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        # Only over HTTPS (after ProxyFix): a browser ignores HSTS sent over plain HTTP anyway, and
        # a local plain-HTTP install must not pin itself to HTTPS.
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
