"""`flask floyo import-git`."""
