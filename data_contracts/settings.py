"""The contract settings: the user's declared scales, windows, volumes and violation policy.

:class:`ContractRules` is the one place their defaults live; ``models.config.DataConfig`` extends it (so the CLI,
the Python API and deployment runs read the same fields), and :class:`ContractSettings` adds what a run decides
(the target domain, the engine).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Policy = Literal["fail", "quarantine"]


class ContractRules(BaseModel):
    """What the data contracts check against, as the user declares it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rating_min: float = Field(0.0, description="bottom of the rating scale")
    rating_max: float = Field(5.0, description="top of the rating scale")
    timestamp_min: int = Field(631_152_000, description="earliest sane Unix timestamp (1990-01-01)")
    future_tolerance_seconds: int = Field(86_400, ge=0, description="how far past now a timestamp may lie")
    on_violation: Policy = Field(
        "fail", description="fail on any broken rule, or quarantine bad rows and go on with the rest")
    min_clean_share: float = Field(0.95, gt=0.0, le=1.0, description="quarantine: least share of rows that must pass")
    min_target_interactions: int = Field(100, ge=1, description="fewest interactions the target domain needs")
    min_target_users: int = Field(20, ge=1, description="fewest users the target domain needs")
    min_target_items: int = Field(5, ge=1, description="fewest items the target domain needs")
    max_single_interaction_share: float = Field(0.5, ge=0.0, le=1.0,
                                                description="warn above this share of single-interaction users")

    def contract_settings(self, target_domain: str | None = None) -> ContractSettings:
        """These rules as the settings of one validation (``target_domain`` adds the minimum-volume rule)."""
        return ContractSettings(**self.model_dump(include=set(ContractRules.model_fields)),
                                target_domain=target_domain)


class ContractSettings(ContractRules):
    """The rules plus what a run decides: the target domain (its minimum volume) and the engine."""

    target_domain: str | None = None
    engine: Literal["auto", "great_expectations"] = "auto"  # see data_contracts.fast

    def parameters(self, now: float | None = None) -> dict[str, float]:
        """Values of the suites' ``$PARAMETER`` placeholders (the future starts at ``now`` + tolerance)."""
        now = time.time() if now is None else now
        return {"rating_min": self.rating_min, "rating_max": self.rating_max,
                "timestamp_min": self.timestamp_min, "timestamp_max": int(now) + self.future_tolerance_seconds}
