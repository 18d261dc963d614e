"""Errors a person can act on: bad config, bad input, a broken contract, a corrupt or missing version.

Each carries a hint saying what to do. The CLI prints such an error as one short block (what failed, where,
what to do, where the full log is) instead of a traceback; anything else is a bug and keeps its traceback.
These are deterministic: retrying the same work gives the same error, so the flows never retry them.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message names the file, record or setting at fault."""

    hint = "fix what the message names, then run the same command again"
