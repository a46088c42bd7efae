//! The protobuf wire reader the walk is built on: varints, keys, length-delimited ranges, skips.

use std::ops::Range;

use super::DecodeError;

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// Most varints in OTLP are field keys, lengths and enums of one or two bytes: those take
    /// a branch or two, inlined; longer ones (timestamps, IDs of ints) the loop below.
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        match self.buf.get(self.pos..self.end).unwrap_or_default() {
            [b0, ..] if *b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(*b0))
            }
            [b0, b1, ..] if *b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    pub(super) fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf[..self.end].get(self.pos) else {
                return Err(DecodeError::Truncated);
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only; more overflows 64 bits, which prost refuses.
            if i == 9 && b > 1 {
                return Err(DecodeError::Varint);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint)
    }

    pub(super) fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        // A key is a uint32 (field numbers stop at 2^29 - 1), as prost reads it.
        let key = u32::try_from(key).map_err(|_| DecodeError::Varint)?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::FieldZero);
        }
        Ok((field, (key & 7) as u8))
    }

    pub(super) fn bytes(&mut self) -> Result<Range<usize>, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        let start = self.pos;
        let end = start.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok(start..end)
    }

    pub(super) fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    /// Skips a field this schema does not know (proto3 keeps going past unknown fields).
    pub(super) fn skip(
        &mut self,
        message: &'static str,
        field: u32,
        wire_type: u8,
    ) -> Result<(), DecodeError> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.fixed::<8>().map(drop),
            2 => self.bytes().map(drop),
            5 => self.fixed::<4>().map(drop),
            // A group (proto2, deprecated): prost skips an unknown one, so the walk does too.
            3 => self.skip_group(message, field, 1),
            // An end-group key with no group open: prost refuses it.
            _ => Err(DecodeError::WireType {
                message,
                field,
                wire_type,
            }),
        }
    }

    /// Skips to the end-group key of `field`, through nested groups (at most
    /// [`MAX_NESTING_DEPTH`](super::MAX_NESTING_DEPTH) deep).
    fn skip_group(
        &mut self,
        message: &'static str,
        field: u32,
        depth: u32,
    ) -> Result<(), DecodeError> {
        if depth > super::MAX_NESTING_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        loop {
            if self.done() {
                return Err(DecodeError::Truncated);
            }
            let (f, w) = self.key()?;
            match w {
                4 if f == field => return Ok(()),
                3 => self.skip_group(message, f, depth + 1)?,
                _ => self.skip(message, f, w)?,
            }
        }
    }
}

pub(super) fn to_u32(r: Range<usize>) -> Range<u32> {
    // Requests are capped far below 4 GiB (max_request_bytes), so offsets fit in u32.
    r.start as u32..r.end as u32
}

pub(super) fn index_u32(len: usize) -> Result<u32, DecodeError> {
    u32::try_from(len).map_err(|_| DecodeError::TooMany)
}

pub(super) fn expect(
    message: &'static str,
    field: u32,
    wire_type: u8,
    want: u8,
) -> Result<(), DecodeError> {
    if wire_type == want {
        Ok(())
    } else {
        Err(DecodeError::WireType {
            message,
            field,
            wire_type,
        })
    }
}

pub(super) fn check_utf8(
    buf: &[u8],
    r: &Range<usize>,
    message: &'static str,
    field: u32,
) -> Result<(), DecodeError> {
    let b = &buf[r.clone()];
    // Nearly every OTLP string is ASCII: the word-at-a-time check inlines, where the full UTF-8
    // validator is a call per (mostly short) string.
    if b.is_ascii() || std::str::from_utf8(b).is_ok() {
        Ok(())
    } else {
        Err(DecodeError::Utf8 { message, field })
    }
}
