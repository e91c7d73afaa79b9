"""Moved to ``timewarp.sources.finevideo`` (with the shared parts in ``timewarp.sources.base``); kept for imports."""
from timewarp.sources.base import *  # noqa: F401,F403
from timewarp.sources.finevideo import *  # noqa: F401,F403
