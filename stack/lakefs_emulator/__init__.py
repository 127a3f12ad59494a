"""A single-process server speaking lakeFS's REST API, so the platform's `lakefs` SDK code runs unchanged
on one machine without a lakeFS install. Data lives on local disk and survives restarts."""
