//! Compressed sample chunks: Gorilla encoding as in Prometheus' XOR chunks.
//!
//! Timestamps are stored as delta-of-delta with variable-width buckets (a regular scrape costs
//! one bit per sample), values as the XOR with the previous value, writing only the meaningful
//! bits (an unchanged value costs one bit). A chunk holds at most [`MAX_SAMPLES`] samples.

use crate::value::{Millis, Point};

/// Samples per chunk, as Prometheus' head chunks.
pub const MAX_SAMPLES: u16 = 120;

/// An append-only bit stream, most significant bit first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn write(&mut self, value: u64, bits: u8) {
        let mut remaining = bits;
        while remaining > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used;
            let take = free.min(remaining);
            // The `take` bits of `value` starting at bit `remaining - 1` (counting from 0).
            let chunk = ((value >> (remaining - take)) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << (free - take);
            }
            self.used = (self.used + take) % 8;
            remaining -= take;
        }
    }

    fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }
}

/// Reads what [`BitWriter`] wrote, through a 64-bit buffer of pending bits (most significant
/// first). Reading past the end yields zero bits.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte to load.
    next: usize,
    buf: u64,
    /// Valid bits at the top of `buf`.
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    #[inline]
    fn refill(&mut self) {
        if self.avail <= 32
            && let Some(word) = self.bytes.get(self.next..self.next + 4)
        {
            let w = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            self.buf |= u64::from(w) << (32 - self.avail);
            self.avail += 32;
            self.next += 4;
        }
        while self.avail <= 56 {
            let b = self.bytes.get(self.next).copied().unwrap_or(0);
            self.next += 1;
            self.buf |= u64::from(b) << (56 - self.avail);
            self.avail += 8;
        }
    }

    #[inline]
    fn read(&mut self, bits: u8) -> u64 {
        match bits {
            0 => 0,
            1..=56 => {
                if self.avail < u32::from(bits) {
                    self.refill();
                }
                let v = self.buf >> (64 - u32::from(bits));
                self.buf <<= bits;
                self.avail -= u32::from(bits);
                v
            }
            _ => {
                let hi = self.read(32);
                let lo = self.read(bits - 32);
                (hi << (bits - 32)) | lo
            }
        }
    }

    #[inline]
    fn bit(&mut self) -> bool {
        self.read(1) == 1
    }
}

/// `leading` before the first meaningful-bits block has been written.
const NO_BLOCK: u8 = u8::MAX;

/// Delta-of-delta buckets: (prefix, prefix bits, value bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u8) -> bool {
    let lo = -(1i64 << (bits - 1)) + 1;
    let hi = 1i64 << (bits - 1);
    v >= lo && v <= hi
}

/// A chunk being appended to, and once full, kept as is (its buffer shrunk to fit).
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    bits: BitWriter,
    count: u16,
    min_t: Millis,
    max_t: Millis,
    t_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Chunk {
    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= MAX_SAMPLES
    }

    pub fn min_t(&self) -> Millis {
        self.min_t
    }

    pub fn max_t(&self) -> Millis {
        self.max_t
    }

    /// Bytes of heap this chunk holds.
    pub fn heap_bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Releases spare capacity once the chunk will not grow again.
    pub fn seal(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// Appends a sample; the caller guarantees `t` is greater than [`Chunk::max_t`] for a
    /// non-empty chunk and that the chunk is not full.
    pub fn push(&mut self, t: Millis, v: f64) {
        let vbits = v.to_bits();
        match self.count {
            0 => {
                self.bits.write(t as u64, 64);
                self.bits.write(vbits, 64);
                self.min_t = t;
                self.leading = NO_BLOCK;
            }
            1 => {
                let delta = t.wrapping_sub(self.max_t);
                self.write_varint(delta);
                self.t_delta = delta;
                self.write_value(vbits);
            }
            _ => {
                let delta = t.wrapping_sub(self.max_t);
                let dod = delta.wrapping_sub(self.t_delta);
                if dod == 0 {
                    self.bits.bit(false);
                } else if let Some(&(prefix, pbits, vbits_n)) =
                    DOD_BUCKETS.iter().find(|(_, _, n)| fits(dod, *n))
                {
                    self.bits.write(prefix, pbits);
                    self.bits
                        .write(dod as u64 & ((1u64 << vbits_n) - 1), vbits_n);
                } else {
                    self.bits.write(0b1111, 4);
                    self.bits.write(dod as u64, 64);
                }
                self.t_delta = delta;
                self.write_value(vbits);
            }
        }
        self.max_t = t;
        self.last_v = vbits;
        self.count += 1;
    }

    fn write_varint(&mut self, v: i64) {
        // Zig-zag, then 7 bits per group with a continuation bit (as bits, not bytes).
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let group = z & 0x7f;
            z >>= 7;
            if z == 0 {
                self.bits.write(group, 8);
                return;
            }
            self.bits.write(group | 0x80, 8);
        }
    }

    fn write_value(&mut self, vbits: u64) {
        let xor = vbits ^ self.last_v;
        if xor == 0 {
            self.bits.bit(false);
            return;
        }
        self.bits.bit(true);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != NO_BLOCK && leading >= self.leading && trailing >= self.trailing {
            self.bits.bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.bits.write(xor >> self.trailing, sig);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        self.bits.bit(true);
        let sig = 64 - leading - trailing;
        self.bits.write(u64::from(leading), 5);
        // 64 significant bits are written as 0 (6 bits cannot hold 64).
        self.bits.write(u64::from(sig) & 0x3f, 6);
        self.bits.write(xor >> trailing, sig);
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter {
            reader: BitReader::new(&self.bits.bytes),
            remaining: self.count,
            read: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }
}

/// Decodes a chunk's samples in order.
pub struct ChunkIter<'a> {
    reader: BitReader<'a>,
    remaining: u16,
    read: u16,
    t: Millis,
    t_delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl ChunkIter<'_> {
    fn read_varint(&mut self) -> i64 {
        let mut z = 0u64;
        let mut shift = 0u32;
        loop {
            let group = self.reader.read(8);
            if shift < 64 {
                z |= (group & 0x7f) << shift;
            }
            shift += 7;
            if group & 0x80 == 0 || shift >= 70 {
                break;
            }
        }
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }

    fn read_value(&mut self) {
        if !self.reader.bit() {
            return;
        }
        if self.reader.bit() {
            self.leading = self.reader.read(5) as u8;
            let mut sig = self.reader.read(6) as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64u8.saturating_sub(self.leading + sig);
        }
        let sig = 64u8.saturating_sub(self.leading + self.trailing);
        let bits = self.reader.read(sig);
        self.v ^= if self.trailing >= 64 {
            0
        } else {
            bits << self.trailing
        };
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Point;

    fn next(&mut self) -> Option<Point> {
        if self.remaining == 0 {
            return None;
        }
        match self.read {
            0 => {
                self.t = self.reader.read(64) as i64;
                self.v = self.reader.read(64);
            }
            1 => {
                self.t_delta = self.read_varint();
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value();
            }
            _ => {
                let dod = if !self.reader.bit() {
                    0
                } else if !self.reader.bit() {
                    sign_extend(self.reader.read(14), 14)
                } else if !self.reader.bit() {
                    sign_extend(self.reader.read(17), 17)
                } else if !self.reader.bit() {
                    sign_extend(self.reader.read(20), 20)
                } else {
                    self.reader.read(64) as i64
                };
                self.t_delta = self.t_delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.t_delta);
                self.read_value();
            }
        }
        self.read += 1;
        self.remaining -= 1;
        Some(Point {
            t: self.t,
            v: f64::from_bits(self.v),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (
            usize::from(self.remaining),
            Some(usize::from(self.remaining)),
        )
    }
}

/// Interprets the low `bits` bits of `v` as a two's-complement number, where the all-ones
/// pattern's neighbour `1 << (bits-1)` stands for the positive maximum (Prometheus' buckets hold
/// `-(2^(n-1)-1) ..= 2^(n-1)`).
fn sign_extend(v: u64, bits: u8) -> i64 {
    let half = 1u64 << (bits - 1);
    if v > half {
        v as i64 - (1i64 << bits)
    } else {
        v as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(points: &[(i64, f64)]) {
        let mut c = Chunk::default();
        for &(t, v) in points {
            c.push(t, v);
        }
        let back: Vec<Point> = c.iter().collect();
        assert_eq!(back.len(), points.len());
        for (p, &(t, v)) in back.iter().zip(points) {
            assert_eq!(p.t, t);
            assert_eq!(p.v.to_bits(), v.to_bits(), "value at {t}");
        }
    }

    #[test]
    fn regular_samples_compress_to_a_few_bits() {
        let mut c = Chunk::default();
        for i in 0..120 {
            c.push(1_700_000_000_000 + i * 1000, 42.0);
        }
        // 16 bytes for the first sample, then ~2 bits per sample.
        c.seal();
        assert!(c.heap_bytes() <= 48, "{} bytes", c.heap_bytes());
        round_trip(&[(5, 1.0), (6, 1.0), (7, 2.0)]);
        round_trip(&[
            (-10, f64::NAN),
            (0, f64::from_bits(0x7ff0_0000_0000_0002)),
            (1 << 40, f64::INFINITY),
            (i64::MAX / 2, -0.0),
        ]);
    }

    proptest! {
        #[test]
        fn any_increasing_series_round_trips(
            start in -1_000_000_000_000i64..2_000_000_000_000i64,
            steps in proptest::collection::vec((1i64..5_000_000_000i64, any::<f64>()), 1..120),
        ) {
            let mut t = start;
            let mut points = Vec::new();
            for (dt, v) in steps {
                points.push((t, v));
                t += dt;
            }
            round_trip(&points);
        }
    }
}
