"""Parameterizations of the synthetic set (see ``jaxdd.synthetic.base`` for the contract) and their registry."""
from jaxdd.synthetic.base import (INITS, Parameterization, class_major_labels, pixel_budget, pixels,
                                  tree_floats)
from jaxdd.synthetic.registry import (PARAMETERIZATIONS, available_parameterizations, make_parameterization,
                                      register_parameterization)

register_parameterization("pixels", lambda ipc, init, **_: pixels(ipc, init))

from jaxdd.synthetic.low_rank import low_rank  # noqa: E402  (registers "low_rank")

__all__ = ["INITS", "PARAMETERIZATIONS", "Parameterization", "available_parameterizations", "class_major_labels",
           "low_rank", "make_parameterization", "pixel_budget", "pixels", "register_parameterization", "tree_floats"]
