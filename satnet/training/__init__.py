"""satnet.training."""
