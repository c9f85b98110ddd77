"""The Floyo agent: watches folders and sends usage events to a Floyo server."""
