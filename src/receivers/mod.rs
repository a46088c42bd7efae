//! Receivers: OTLP over gRPC and HTTP (protobuf and JSON). They decode and hand off to the pipeline.

pub mod decode;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;

use std::io::Read;

/// Why a compressed body could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    #[error("decompressed body exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("invalid gzip body: {0}")]
    Corrupt(String),
}

/// Gunzips a body, stopping as soon as the output would pass `cap` bytes (gzip bombs cost
/// at most `cap` of memory). The one place that decompresses untrusted input.
pub fn gunzip_capped(input: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut reader = flate2::read::MultiGzDecoder::new(input).take(cap as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > cap {
        return Err(InflateError::TooLarge(cap));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_cap() {
        assert_eq!(gunzip_capped(&gzip(b"hello"), 5).unwrap(), b"hello");
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert_eq!(
            gunzip_capped(&bomb, 1 << 20),
            Err(InflateError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            gunzip_capped(b"not gzip", 100),
            Err(InflateError::Corrupt(_))
        ));
    }
}
