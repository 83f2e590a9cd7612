"""The attendance consumer: one consumer group (comms-attendance); counts absences, announces tiers."""

from consumers._main import main

if __name__ == "__main__":
    main("attendance")
