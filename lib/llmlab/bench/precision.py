"""Bench section ``precision`` (topic 8): placeholder until the precision package lands (replaced below)."""
