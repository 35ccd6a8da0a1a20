"""satnet.evaluation."""
