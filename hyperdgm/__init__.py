"""hyperdgm."""
