"""Test fixtures for the services: real servers, isolated per run."""
