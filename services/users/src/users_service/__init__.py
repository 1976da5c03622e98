"""The users service. User profiles behind a read-through Redis cache."""
