//! Vectors as the graph holds them: 8-bit integers with one scale per vector.
//!
//! An f32 vector of 384 dimensions costs 1.5 KiB in the graph; as i8 it costs 388 bytes
//! (384 codes plus the scale's four bytes at the end), which is what keeps a million
//! events' graph inside its memory budget. The graph only ranks candidates with these;
//! search re-scores the best of them exactly from the f32 vectors in SQLite.

/// Bytes after the codes holding the vector's scale (an f32, little-endian).
const SCALE_BYTES: usize = 4;

/// Quantizes a vector: each component becomes `round(x / scale)` with
/// `scale = max|x| / 127`, and the scale is appended.
pub fn quantize(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut out: Vec<i8> = Vec::with_capacity(v.len() + SCALE_BYTES);
    out.extend(v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8));
    out.extend(scale.to_le_bytes().map(|b| b as i8));
    out
}

fn split(q: &[i8]) -> (&[i8], f32) {
    let (codes, scale) = q.split_at(q.len() - SCALE_BYTES);
    (codes, f32::from_le_bytes([scale[0] as u8, scale[1] as u8, scale[2] as u8, scale[3] as u8]))
}

/// Approximate dot product of two quantized vectors.
pub fn quantized_dot(a: &[i8], b: &[i8]) -> f32 {
    let (ca, sa) = split(a);
    let (cb, sb) = split(b);
    // Chunks of 16 keep the i32 sum in a form the compiler turns into SIMD multiply-adds.
    let mut sum = 0i32;
    for (x, y) in ca.chunks(16).zip(cb.chunks(16)) {
        sum += x.iter().zip(y).map(|(p, q)| i32::from(*p) * i32::from(*q)).sum::<i32>();
    }
    sum as f32 * sa * sb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::dot;

    fn unit(seed: u32) -> Vec<f32> {
        // A deterministic pseudo-random unit vector (xorshift), enough for error bounds.
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut v: Vec<f32> = (0..384)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn quantized_dot_is_close_to_the_exact_one() {
        for i in 0..50 {
            let (a, b) = (unit(i), unit(i + 1000));
            let exact = dot(&a, &b);
            let approx = quantized_dot(&quantize(&a), &quantize(&b));
            assert!((exact - approx).abs() < 0.01, "exact {exact}, quantized {approx}");
            let self_dot = quantized_dot(&quantize(&a), &quantize(&a));
            assert!((self_dot - 1.0).abs() < 0.01, "self dot {self_dot}");
        }
    }

    #[test]
    fn zero_vector_is_safe() {
        let zero = quantize(&[0.0; 384]);
        assert_eq!(quantized_dot(&zero, &zero), 0.0);
    }
}
