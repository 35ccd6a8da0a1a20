"""satnet.preprocessing."""
