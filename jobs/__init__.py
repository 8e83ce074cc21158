"""Ray job entrypoints and example job specs (`python -m jobs.restore --spec jobs/…yaml`)."""
