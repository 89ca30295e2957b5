"""Step kinds, one module each. Importing this package registers them."""

from orchestra.steps import task  # noqa: F401
from orchestra.steps import human  # noqa: F401
from orchestra.steps import signal  # noqa: F401
from orchestra.steps import http  # noqa: F401
from orchestra.steps import sql  # noqa: F401
from orchestra.steps import llm  # noqa: F401
from orchestra.steps import agent  # noqa: F401
