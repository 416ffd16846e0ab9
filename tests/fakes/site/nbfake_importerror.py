"""A plugin whose import fails, as a broken third-party release would."""

import this_module_does_not_exist  # noqa: F401
