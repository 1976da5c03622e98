"""Shared building blocks of the services: events, messaging, logging, security, health."""
