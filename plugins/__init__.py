"""Built-in nebridge plugins, registered through the same ``nebridge`` entry-point group as
third-party ones (see ``pyproject.toml``)."""
