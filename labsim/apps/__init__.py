"""What runs inside the modelled pods of the charts (labsim.charts): one module per app, each
speaking its app's API or doing its controller's work against the twin's API server."""
