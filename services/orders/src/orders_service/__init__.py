"""The orders service. Orders, their items and the order state machine."""
