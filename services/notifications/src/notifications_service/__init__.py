"""The notifications service. Email notifications from the users' and orders' events."""
