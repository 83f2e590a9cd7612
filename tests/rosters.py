"""Generated rosters for tests that need more families than the fixture has."""

from comms.roster import synthetic_roster as write_roster

__all__ = ["write_roster"]
