"""Entry point for ``dramatiq actors.worker``: boots the runtime from ``RESIMHUB_*`` settings.

The ``dramatiq`` CLI imports this module in every worker process it forks, so this is the one
place where configuration happens at import; the rest of the code never does that.
"""

from actors.runtime import boot
from storage.settings import load_settings

runtime = boot(load_settings())
broker = runtime.broker
