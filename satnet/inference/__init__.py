"""satnet.inference."""
