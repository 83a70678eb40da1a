"""The MLUBench data: release resolution, records, entities, QA pairs, images, validation, splits."""
