"""Response headers that protect pages (CSP, HSTS) and the client address behind trusted proxies."""

import functools

from flask import g, request
from werkzeug.middleware.proxy_fix import ProxyFix

# Scripts and styles come only from static/. HTMX needs no inline script or eval for the
# attributes used here, and its indicator <style> is turned off by the htmx-config meta tag in
# base.html (app.css has those rules).
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
# Pages with plotly charts: plotly.js 4.1.1 inserts <style> elements (its chart rules and the
# bundled maplibre rules) and style attributes as it draws, so those pages allow inline styles.
# Inline styles cannot run code; scripts stay as strict as on every other page.
CHART_PAGE_POLICY = CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
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
            policy = CHART_PAGE_POLICY if g.get("csp_inline_styles") else CONTENT_SECURITY_POLICY
            response.headers.setdefault("Content-Security-Policy", policy)
        # Only over HTTPS (after ProxyFix): a browser ignores HSTS sent over plain HTTP anyway, and
        # a local plain-HTTP install must not pin itself to HTTPS.
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response


def allow_inline_styles(view):
    """Send CHART_PAGE_POLICY, which allows inline styles, with this view's pages (for plotly charts)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.csp_inline_styles = True
        return view(*args, **kwargs)

    return wrapper
