"""The auth service. Registration, login, tokens, signing keys."""
