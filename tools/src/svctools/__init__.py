"""Local development and test tooling for the services."""
