//! The AWS X-Ray exporter: span → segment-document translation and a document validator.

pub mod translate;
pub mod validate;
