"""The method registry (``jaxdd.methods.registry``) with every built-in method registered
(``jaxdd.methods.builtin``): ``get_method(name)``, ``available_methods()``, ``register_method(MethodSpec(...))``."""
from jaxdd.methods.registry import (MethodContext, MethodSpec, Option, available_methods, constructor_option,  # noqa
                                    get_method, register_deriver, register_method, resolve_options)
from jaxdd.methods import builtin  # noqa: F401,E402  (registers the built-in methods)
from jaxdd.methods.builtin import DERIVED_BASES, check_buffer_matches, derive_mim  # noqa: F401,E402
