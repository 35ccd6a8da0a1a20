"""satnet.planning."""
