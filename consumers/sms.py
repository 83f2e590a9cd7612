"""The sms consumer: one consumer group (comms-sms) on the events topic."""

from consumers._main import main

if __name__ == "__main__":
    main("sms")
