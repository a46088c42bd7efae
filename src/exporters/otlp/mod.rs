//! OTLP out, shared by `xray.mode=otlp` and the OTLP exporter to come: [`splice`] builds new
//! requests from the received span bytes, [`send`] posts them over HTTP and signs them with
//! SigV4 when the destination is AWS. (OTLP/gRPC sending lands with the OTLP exporter.)

pub mod send;
pub mod splice;

pub use send::{HttpSender, Signer};
pub use splice::{Limits, Request, Splicer};
