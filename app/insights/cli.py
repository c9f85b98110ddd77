"""`flask floyo analyze`."""
