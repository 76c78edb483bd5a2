"""Alerts on the Redis pub/sub channel ``changes:alerts`` (scaling model §5.2).

Auto mode's landing switches and the pipeline's lag decisions (alert, catch-up start and end, a
window given up after its retries) are published here as JSON objects with a ``kind``; the API's
live feed and any subscriber (``redis-cli SUBSCRIBE changes:alerts``) see them as they happen.
Publishing is best effort: with Redis down the alert is logged and the caller goes on.
"""

from __future__ import annotations

import json
import logging

from ingest.config import FlowLensConfig

log = logging.getLogger(__name__)
ALERTS_CHANNEL = "changes:alerts"


def publish_alert(cfg: FlowLensConfig, event: dict) -> bool:
    """Publish ``event`` as JSON on ``changes:alerts``; False (logged) when Redis does not take it."""
    try:
        import redis

        client = redis.Redis.from_url(cfg.redis.url(), socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(ALERTS_CHANNEL, json.dumps(event, default=str))
        finally:
            client.close()
        return True
    except Exception as exc:
        log.warning("alert %s not published on Redis %s (%s)", event.get("kind"), ALERTS_CHANNEL, exc)
        return False
