"""The package's version: the one place it is written (the build reads it from here, see
``[tool.hatch.version]`` in pyproject.toml), so importing costspan needs no metadata lookup."""

__version__ = "0.1.0"
