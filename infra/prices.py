"""A dated hourly price table for ap-northeast-1 (Tokyo) and the cost arithmetic of a run.

The figures are ESTIMATES (USD per hour, Linux, rounded) written down on the date below from
AWS's public on-demand price list; spot prices move all the time, so the spot column is a
typical recent figure, not a quote. ``plan`` and ``status`` use them offline — check the AWS
pricing pages before relying on a number.
"""

from __future__ import annotations

from dataclasses import dataclass

AS_OF = "2026-11-22"
REGION = "ap-northeast-1"
CURRENCY = "USD"

# instance type: (on-demand $/h, typical spot $/h)
INSTANCE_HOURLY: dict[str, tuple[float, float]] = {
    "t3.small": (0.0272, 0.0082),
    "t3.medium": (0.0544, 0.0163),
    "t3.large": (0.1088, 0.0326),
    "c6i.large": (0.107, 0.036),
    "c6i.xlarge": (0.214, 0.072),
    "c6i.2xlarge": (0.428, 0.144),
    "c7i.large": (0.1124, 0.040),
    "c7i.xlarge": (0.2247, 0.080),
    "c7i.2xlarge": (0.4494, 0.160),
    "c7i.4xlarge": (0.8988, 0.320),
    "c7g.large": (0.0904, 0.031),
    "c7g.xlarge": (0.1808, 0.062),
    "m7i.large": (0.1302, 0.046),
    "m7i.xlarge": (0.2604, 0.092),
}
PUBLIC_IPV4_HOURLY = 0.005  # every in-use public IPv4 address
GP3_GB_MONTH = 0.096  # EBS gp3 storage
HOURS_PER_MONTH = 730.0
ROOT_VOLUME_GB = 16  # what infra gives each node (the venv with pandas/pyarrow needs room)


@dataclass(frozen=True)
class Line:
    """One priced line of a plan: ``count`` × ``what`` at ``hourly`` each (None = unknown)."""

    what: str
    count: int
    hourly: float | None

    @property
    def total(self) -> float | None:
        return None if self.hourly is None else self.hourly * self.count


def instance_hourly(instance_type: str, *, spot: bool = False) -> float | None:
    """Estimated $/h of one instance (None when the type is not in the table)."""
    row = INSTANCE_HOURLY.get(instance_type)
    if row is None:
        return None
    return row[1] if spot else row[0]


def node_overhead_hourly() -> float:
    """What every node costs beside the instance: its public IPv4 and its root volume."""
    return PUBLIC_IPV4_HOURLY + ROOT_VOLUME_GB * GP3_GB_MONTH / HOURS_PER_MONTH


def total(lines: list[Line]) -> float | None:
    """Sum of the lines, or None if any line's price is unknown."""
    values = [ln.total for ln in lines]
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def money(x: float | None) -> str:
    return "unknown (type not in the price table)" if x is None else f"${x:.4f}"
