"""`python -m consumers NAME`: any consumer by name, one consumer group (comms-NAME) each; the names
are the channels' consumers (comms/channels), attendance and feedback. `python -m consumers.sms` and
the other thin modules are the same for the consumers they name."""

import sys

from consumers._main import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m consumers NAME  (a channel's consumer, attendance or feedback)")
    main(sys.argv[1])
