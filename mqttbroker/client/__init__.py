"""A client connection over asyncio: ``connection.py`` reads and decides, ``output.py`` writes.

The MQTT rules of one connection are below, in ``protocol/connection.py`` (sans-I/O).
"""

from .connection import LINGER, ClientConnection
from .output import PUMP_BATCH, SLOW_CONSUMER_GRACE, WRITE_BATCH

__all__ = ["LINGER", "PUMP_BATCH", "SLOW_CONSUMER_GRACE", "WRITE_BATCH", "ClientConnection"]
