"""satnet.io."""
