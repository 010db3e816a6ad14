"""Entry point for ``dramatiq actors.worker``: boots the runtime from ``RESIMHUB_*`` settings.

The ``dramatiq`` CLI imports this module in every worker process it forks, so this is the one
place where configuration happens at import; the rest of the code never does that. ``runtime`` and
``broker`` are module attributes because that is how the CLI finds them (``actors.worker:broker``).
"""

import dramatiq

from actors.runtime import boot
from storage.logs import configure
from storage.settings import load_settings

settings = load_settings()
# Replaces the handlers the dramatiq CLI installed: worker lines carry task and event ids as JSON.
configure(settings.log_level, settings.log_format or "json")
runtime = boot(settings)
broker = runtime.broker
# The one global broker, and only in this process: given a module without ``:broker`` (as in
# ``dramatiq actors.worker``, which ``resimhub worker`` runs and the docs show), the CLI takes
# dramatiq.get_broker(), which would otherwise build a RabbitMQ broker on localhost. Nothing of ours
# reads it: every actor is declared on ``broker`` itself.
dramatiq.set_broker(broker)
