"""The email consumer: one consumer group (comms-email) on the events topic."""

from consumers._main import main

if __name__ == "__main__":
    main("email")
