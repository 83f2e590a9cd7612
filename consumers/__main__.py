"""`python -m consumers NAME`: any consumer by name, one consumer group (comms-NAME) each; the names
are the channels' consumers (comms/channels) and attendance. `python -m consumers.sms` and the other
thin modules are the same for the consumers they name."""

import sys

from comms.worker import consumer_names
from consumers._main import main

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in consumer_names():
        sys.exit(f"usage: python -m consumers NAME  (NAME: {', '.join(consumer_names())})")
    main(sys.argv[1])
