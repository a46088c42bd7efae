//! CloudWatch exporter tests.
