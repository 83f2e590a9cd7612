"""Runnable consumers, one consumer group each: `python -m consumers.sms` (or `comms run --only sms`)."""
