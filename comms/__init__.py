"""district-comms: event-driven communications for a school district's Office of Communications."""

__version__ = "0.1.0"
