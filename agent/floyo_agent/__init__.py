"""The Floyo agent: watches folders and sends file usage events to a Floyo server."""

__version__ = "0.1.0"
