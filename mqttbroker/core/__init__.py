"""The broker's core: what every connection, transport and extension reaches it through."""
