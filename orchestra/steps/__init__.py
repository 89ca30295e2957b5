"""Step kinds, one module each. Importing this package registers them."""

from orchestra.steps import task  # noqa: F401
