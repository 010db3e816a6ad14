"""Everything a process needs to read and write state, opened once from settings."""

from __future__ import annotations

from dataclasses import dataclass

from storage.artifacts import ArtifactStore
from storage.db import Database, private_dir
from storage.outbox import OutboxSignal, install_commit_hook
from storage.result_channel import CeleryResultChannel
from storage.settings import Settings
from storage.tasks import install_channel_hook


@dataclass
class Storage:
    settings: Settings
    db: Database
    channel: CeleryResultChannel | None
    outbox_signal: OutboxSignal

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifacts_dir)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.db.dispose()


def open_storage(settings: Settings, *, pool_size: int = 20) -> Storage:
    """Engine, session hooks and the optional Redis channel; connects lazily, on first use."""
    private_dir(settings.data_dir)
    db = Database(settings, pool_size=pool_size)
    signal = OutboxSignal()
    channel = CeleryResultChannel(settings.redis_url, settings.result_ttl) if settings.redis_url else None
    install_commit_hook(db.sessions, signal)
    install_channel_hook(db.sessions, channel)
    return Storage(settings=settings, db=db, channel=channel, outbox_signal=signal)
