"""A plugin whose module ends the process at import, as a careless script-turned-plugin does."""

raise SystemExit(0)
