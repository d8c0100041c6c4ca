"""k3s on the simulated nodes."""
