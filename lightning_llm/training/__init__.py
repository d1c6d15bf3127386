"""Training: the LightningModule, our callbacks, optimizer groups and schedules, logger factories."""
