"""Outbound webhooks: events pushed to the customer's endpoints, signed (Standard Webhooks),
retried and logged. The inbound SES/SNS notification handler is `mailer.webhooks`."""
