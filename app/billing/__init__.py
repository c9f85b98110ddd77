"""Plans, Stripe subscriptions and invoices, and the limits of each plan."""
