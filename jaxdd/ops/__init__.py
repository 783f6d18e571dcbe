"""Numerical kernels that know no model and no method: ``jaxdd.ops.conv`` (the convolutions selected by ``conv_impl``)."""
