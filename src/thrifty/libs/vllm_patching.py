"""How thrifty's vLLM plugins replace a vLLM function: once, however often vLLM runs its
plugins (in every process it starts, maybe twice in one)."""

import functools


def wrap_once(owner, name: str, make) -> bool:
    """Replace `owner.name` with `make(original)`; False when owner has no such attribute."""
    original = getattr(owner, name, None)
    if original is None:
        return False
    if getattr(original, "thrifty_wrapped", False):
        return True  # installed already
    wrapped = functools.wraps(original)(make(original))
    wrapped.thrifty_wrapped = True
    setattr(owner, name, wrapped)
    return True
