"""Logging set-up of the control plane: the same as the edge's (:mod:`edge_node.logs`)."""

from edge_node.logs import LEVELS, configure_logging

__all__ = ["LEVELS", "configure_logging"]
