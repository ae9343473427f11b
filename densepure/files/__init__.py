"""Files the other layers share: atomic writes and the package data (configs, schema, the paper's numbers)."""
