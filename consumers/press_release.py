"""The press consumer: one consumer group (comms-press) on the events topic."""

from consumers._main import main

if __name__ == "__main__":
    main("press")
