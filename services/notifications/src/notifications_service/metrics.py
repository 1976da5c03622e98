"""Prometheus metrics of email delivery (served by the shared ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EMAILS_SENT = Counter(
    "notifications_emails_sent_total", "Emails the SMTP server accepted.", ["service", "template"]
)
SEND_FAILURES = Counter(
    "notifications_send_failures_total",
    "Send attempts the SMTP server did not accept, by kind (transient, permanent).",
    ["service", "kind"],
)
NOTIFICATIONS_FAILED = Counter(
    "notifications_failed_total",
    "Notifications given up (permanent refusal or past the delivery deadline).",
    ["service", "template"],
)
SEND_DURATION = Histogram(
    "notifications_send_duration_seconds",
    "Time of one SMTP send, successful or not.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
