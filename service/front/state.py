"""What a front's routes share."""

from __future__ import annotations

from dataclasses import dataclass

from service.front.client import EngineLink
from service.metrics import Metrics
from service.settings import Settings


@dataclass
class Front:
    """What the routes share: the settings, the engine link, the metrics, the drain flag."""

    settings: Settings
    engine: EngineLink
    metrics: Metrics
    draining: bool = False
