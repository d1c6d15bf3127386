"""A test-only fourth model family: one folder (model + family) plus a YAML, registered without touching any
other package. It proves the family interface is all the rest of the project needs."""
