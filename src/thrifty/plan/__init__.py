"""The deployment decision: runs the other parts through their commands and writes the
report and the manifests."""
