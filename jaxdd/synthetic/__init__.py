"""Parameterizations of the synthetic set (see ``jaxdd.synthetic.base`` for the contract)."""
from jaxdd.synthetic.base import (INITS, Parameterization, class_major_labels, pixel_budget, pixels,
                                  tree_floats)

__all__ = ["INITS", "Parameterization", "class_major_labels", "pixel_budget", "pixels", "tree_floats"]
