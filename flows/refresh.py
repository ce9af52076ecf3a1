"""``refresh-domain``: re-onboard a domain on its latest data; the champion moves only through the gate.

The nightly job of a live domain: the data is validated again (a broken delivery fails the run and leaves
the registry alone), sources are reused from the registry (trained only when the data changed), the best
source is fine-tuned, every baseline retrained, and the new model registered as ``challenger``; it replaces
``champion`` only when it beats the current champion on this run's test users (lift above the margin with
its paired interval above zero, see :mod:`tasks.registry`).
"""

from __future__ import annotations

from prefect import flow

from flows.config import OnboardConfig
from flows.onboard import onboard_domain_flow
from tasks.report import OnboardingSummary


@flow(name="refresh-domain")
def refresh_domain_flow(config: OnboardConfig) -> OnboardingSummary:
    """One onboarding of ``config.target_domain`` on the data as it is now (see the module docstring)."""
    return onboard_domain_flow(config)
