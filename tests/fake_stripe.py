"""A fake of the Stripe API for tests, on 127.0.0.1, answering with Stripe's own sample objects.

The objects come from the shared data folder (Stripe's published fixtures), with ids and the
fields a test cares about replaced. Besides the API routes the `stripe` library calls, the fake
builds the events Stripe would send after a checkout, so a test can sign and deliver them.
"""

import copy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import stripe


class FakeStripe:
    def __init__(self, data_dir, api_key):
        self.data_dir = data_dir
        self.api_key = api_key
        self.samples = {}
        self.requests = []
        self.customers = {}
        self.sessions = {}
        self.counter = itertools.count(1)
        self.server = None
        self.thread = None

    # Sample objects

    def sample(self, name):
        if name not in self.samples:
            self.samples[name] = json.loads((self.data_dir / "stripe" / f"{name}.json").read_text())
        return copy.deepcopy(self.samples[name])

    def new_id(self, prefix):
        return f"{prefix}_fake{next(self.counter):04d}"

    # Server

    @property
    def base_url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                fake.handle(self, "POST")

            def do_GET(self):
                fake.handle(self, "GET")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-stripe", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def handle(self, request, method):
        length = int(request.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(request.rfile.read(length).decode())) if length else {}
        self.requests.append({"method": method, "path": request.path, "form": form})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.reply(request, 401, {"error": {"type": "invalid_request_error", "message": "Invalid API key"}})
        routes = {
            ("POST", "/v1/customers"): self.create_customer,
            ("POST", "/v1/checkout/sessions"): self.create_checkout_session,
            ("POST", "/v1/billing_portal/sessions"): self.create_portal_session,
        }
        route = routes.get((method, request.path.split("?", 1)[0]))
        if route is None:
            return self.reply(request, 404, {"error": {"type": "invalid_request_error", "message": "Unknown route"}})
        return self.reply(request, 200, route(form))

    def reply(self, request, status, body):
        raw = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(raw)))
        request.send_header("Request-Id", f"req_fake{next(self.counter)}")
        request.end_headers()
        request.wfile.write(raw)

    # API routes

    def create_customer(self, form):
        customer = self.sample("customer")
        customer.update(id=self.new_id("cus"), name=form.get("name"), created=int(time.time()))
        customer["metadata"] = _nested(form, "metadata")
        self.customers[customer["id"]] = customer
        return customer

    def create_checkout_session(self, form):
        session = self.sample("checkout.session")
        session_id = self.new_id("cs_test")
        session.update(
            id=session_id,
            mode=form.get("mode"),
            customer=form.get("customer"),
            client_reference_id=form.get("client_reference_id"),
            success_url=form.get("success_url"),
            cancel_url=form.get("cancel_url"),
            status="open",
            payment_status="unpaid",
            subscription=None,
            created=int(time.time()),
            url=f"{self.base_url}/pay/{session_id}",
        )
        session["metadata"] = _nested(form, "metadata")
        session["subscription_metadata"] = _nested(form, "subscription_data[metadata]")
        session["price"] = form.get("line_items[0][price]")
        self.sessions[session_id] = session
        return session

    def create_portal_session(self, form):
        portal = self.sample("billing_portal.session")
        portal.update(id=self.new_id("bps"), customer=form.get("customer"), return_url=form.get("return_url"))
        portal["url"] = f"{self.base_url}/portal/{portal['id']}"
        return portal

    # Events Stripe sends

    def event(self, event_type, obj, created=None):
        event = self.sample("event")
        event.update(id=self.new_id("evt"), type=event_type, created=created or int(time.time()))
        event["data"] = {"object": obj}
        return event

    def subscription(self, customer, price, status="active", metadata=None, period_end=None):
        subscription = self.sample("subscription")
        now = int(time.time())
        subscription.update(
            id=self.new_id("sub"),
            customer=customer,
            status=status,
            metadata=metadata or {},
            cancel_at=None,
            cancel_at_period_end=False,
            canceled_at=None,
            ended_at=None,
            trial_end=None,
            created=now,
        )
        item = subscription["items"]["data"][0]
        item["price"]["id"] = price
        item["subscription"] = subscription["id"]
        item["current_period_start"] = now
        item["current_period_end"] = period_end or now + 30 * 24 * 3600
        subscription["items"]["data"] = [item]
        return subscription

    def invoice(self, customer, subscription_id, status="paid", amount=2000):
        invoice = self.sample("invoice")
        invoice.update(
            id=self.new_id("in"),
            customer=customer,
            status=status,
            amount_due=amount,
            amount_paid=amount if status == "paid" else 0,
            number=f"FAKE-{next(self.counter):04d}",
            hosted_invoice_url=f"https://invoice.stripe.com/i/{next(self.counter):04d}",
        )
        invoice["parent"] = {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription_id},
            "type": "subscription_details",
        }
        return invoice

    def complete_checkout(self, session_id):
        """Pay an open session: return the events Stripe would send, in the order it sends them."""
        session = self.sessions[session_id]
        subscription = self.subscription(
            session["customer"], session["price"], metadata=session["subscription_metadata"]
        )
        session.update(status="complete", payment_status="paid", subscription=subscription["id"])
        invoice = self.invoice(session["customer"], subscription["id"])
        public_session = {key: value for key, value in session.items() if key not in ("subscription_metadata", "price")}
        return [
            self.event("customer.subscription.created", subscription),
            self.event("invoice.paid", invoice),
            self.event("checkout.session.completed", public_session),
        ]


def _nested(form, prefix):
    """Collect form fields like metadata[org_id] into a dict."""
    start = f"{prefix}["
    return {key[len(start) : -1]: value for key, value in form.items() if key.startswith(start) and key.endswith("]")}


def sign(payload, secret, timestamp=None):
    """The Stripe-Signature header for a raw body, made by the stripe library itself."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    return stripe.WebhookSignature.generate_signature_header(text, secret, timestamp=timestamp)
