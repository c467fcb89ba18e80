"""Training utilities for graph hypernetworks: architecture sampling and synthetic data."""
