"""Worker entry point for bench_events.py: the hub's runtime plus two no-op consumers.

``noop_consumer`` is idempotent like every real consumer (ledger check + insert, keyed on the
event id) and stamps when it started; ``raw_noop`` does nothing at all and measures Dramatiq's own
rate on the same broker.
"""

import dramatiq

from actors.handling import consumer
from actors.runtime import boot
from storage import ledger
from storage.logs import configure
from storage.settings import load_settings

settings = load_settings()
# As actors/worker.py does: without it the dramatiq CLI's INFO handlers log every event, and the
# benchmark measures logging (RESIMHUB_LOG_LEVEL=WARNING is what bench_events.py sets).
configure(settings.log_level, settings.log_format or "json")
runtime = boot(settings)
broker = runtime.broker
prefix = runtime.settings.queue_prefix


@consumer("noop_consumer")
def _noop(runtime, envelope) -> None:
    # The ledger write every real consumer makes, through the same function (its time stamp is
    # when the handler started, which the latency phase reads).
    with runtime.storage.db.session() as session:
        ledger.mark(session, envelope.id, "noop_consumer")
        session.commit()


def _raw_noop(n: int) -> None:
    return None


dramatiq.Actor(lambda event: _noop(runtime, event), broker=broker, actor_name="noop_consumer",
               queue_name=prefix + "bench", priority=0, options={"max_retries": 0, "time_limit": 60_000})
dramatiq.Actor(_raw_noop, broker=broker, actor_name="raw_noop", queue_name=prefix + "benchraw", priority=0,
               options={"max_retries": 0, "time_limit": 60_000})
