"""The files (and the HTTP API) parts hand each other: each with a version and one loader."""
