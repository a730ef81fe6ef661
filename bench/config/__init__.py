"""Typed, strict configuration: the dataclass schemas Hydra composes against (the one source of defaults) and the
validation of values that type-check but cannot work."""
