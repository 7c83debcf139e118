"""Listeners: each hands every new connection to a protocol factory; none imports the broker."""
