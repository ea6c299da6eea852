"""A backbone method registered outside moviessl (as a user's own module would), for the tests of
how the demo's spawned workers learn of it. Importing this module registers ``user_random``."""

from __future__ import annotations

from moviessl.ssl.methods.random import RandomInit
from moviessl.ssl.registry import register_method


@register_method("user_random")
class UserRandom(RandomInit):
    """The random-init reference under another name: nothing to train, quick to plan."""
