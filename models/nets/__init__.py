"""Nets: the networks, the LightningModule and the fit loop."""
