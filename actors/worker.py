"""Entry point for ``dramatiq actors.worker``: boots the runtime from ``RESIMHUB_*`` settings.

The ``dramatiq`` CLI imports this module in every worker process it forks, so this is the one
place where configuration happens at import; the rest of the code never does that.
"""

from actors.runtime import boot
from storage.logs import configure
from storage.settings import load_settings

settings = load_settings()
# Replaces the handlers the dramatiq CLI installed: worker lines carry task and event ids as JSON.
configure(settings.log_level, settings.log_format or "json")
runtime = boot(settings)
broker = runtime.broker
