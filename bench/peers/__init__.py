"""The peers' service definitions, each served by the peer's own server (peers.py starts them)."""
