"""Sans-I/O MQTT: bytes in, packets out, bytes to send. No asyncio, sockets or clocks here."""
