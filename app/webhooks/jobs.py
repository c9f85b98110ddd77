"""RQ jobs of the webhooks package."""

from app.queue import job


@job
def process_delivery_job(delivery_id):
    from app.webhooks.service import process_delivery

    return process_delivery(delivery_id)


@job
def send_delivery_job(delivery_id):
    from app.webhooks.outgoing import attempt_delivery

    return attempt_delivery(delivery_id)
