"""Records of what a run found, witness confirmation, verdicts and the versioned JSON."""
