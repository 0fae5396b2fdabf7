"""dockyard: a Docker Swarm platform in tiers (see ../README.md)."""
