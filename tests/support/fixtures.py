"""Where the committed test fixtures live: ``tests/fixtures/``, inside the repository, so that a
fresh clone runs every test (each fixture sits beside the script that made it)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: A PyTorch ``torch.save(q_network.state_dict())`` of a CartPole DQN (4 -> 64 -> 64 -> 2, ReLU),
#: saved under a misleading ``.pkl`` name on purpose: formats are recognised by content.
SEED_DQN_MODEL = FIXTURES / "seed_dqn_model.pkl"
