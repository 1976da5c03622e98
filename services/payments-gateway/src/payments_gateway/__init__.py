"""The payments-gateway service. Payments and refunds through the external payment provider."""
