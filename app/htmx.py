"""HX-* response helpers. Views use these instead of setting HTMX headers by hand.

`htmx-flask` supplies `request.htmx`; its own response helper is not used because its list of swap
styles is broken (a missing comma joins two of them into one string).
"""

import json

from flask import make_response, redirect, request


def is_htmx():
    return bool(request.headers.get("HX-Request"))


def hx_redirect(url, status=200):
    """Send the browser to `url`: an HX-Redirect for HTMX requests, a 302 for the others.

    A 302 answer to an HTMX request would be followed by the XHR and the whole target page swapped
    into the fragment; HX-Redirect makes htmx load the page as a full navigation instead.
    """
    if is_htmx():
        response = make_response("", status)
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url)


def hx_trigger(response, name, detail=None):
    """Add a client event to the response's HX-Trigger, merging with events already set."""
    existing = response.headers.get("HX-Trigger")
    events = {}
    if existing:
        try:
            events = json.loads(existing)
        except ValueError:
            events = {event.strip(): None for event in existing.split(",")}
    events[name] = detail
    response.headers["HX-Trigger"] = json.dumps(events)
    return response


def hx_reswap(response, swap):
    response.headers["HX-Reswap"] = swap
    return response


def hx_retarget(response, selector):
    response.headers["HX-Retarget"] = selector
    return response
