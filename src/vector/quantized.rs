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
    code_dot(ca, cb) as f32 * sa * sb
}

/// Dot product of an exact vector with a quantized one: only the second is approximated
/// (each component off by at most half a step of its scale), so the error is smaller than
/// the 8-bit-by-8-bit one's; within 0.005 of the exact dot for unit vectors (tested).
pub fn mixed_dot(exact: &[f32], q: &[i8]) -> f32 {
    let (codes, scale) = split(q);
    let sum: f32 = exact.iter().zip(codes).map(|(x, c)| x * f32::from(*c)).sum();
    sum * scale
}

/// The integer dot product of two code slices (of equal length). Most of a graph walk is
/// spent here, and a build for any x86-64 gets only 128-bit SSE2 from the compiler: with
/// AVX2 on the running CPU, the 256-bit version (the same exact integer sum) is taken.
fn code_dot(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len(), "codes of one dimension");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { code_dot_avx2(a, b) };
    }
    code_dot_portable(a, b)
}

fn code_dot_portable(a: &[i8], b: &[i8]) -> i32 {
    // Chunks of 16 keep the i32 sum in a form the compiler turns into SIMD multiply-adds.
    let mut sum = 0i32;
    for (x, y) in a.chunks(16).zip(b.chunks(16)) {
        sum += x.iter().zip(y).map(|(p, q)| i32::from(*p) * i32::from(*q)).sum::<i32>();
    }
    sum
}

/// 16 codes at a time: widened to i16, multiplied and added in pairs into eight i32 sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn code_dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let whole = n - n % 16;
    let mut acc = _mm256_setzero_si256();
    for (x, y) in a[..whole].chunks_exact(16).zip(b[..whole].chunks_exact(16)) {
        // SAFETY: each chunk is 16 bytes, what an unaligned 128-bit load reads.
        let (x, y) = unsafe { (_mm_loadu_si128(x.as_ptr().cast()), _mm_loadu_si128(y.as_ptr().cast())) };
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y)));
    }
    let halves = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
    let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32::<0b01_00_11_10>(halves));
    let total = _mm_add_epi32(pairs, _mm_shuffle_epi32::<0b10_11_00_01>(pairs));
    _mm_cvtsi128_si32(total) + code_dot_portable(&a[whole..n], &b[whole..n])
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
    fn the_mixed_dot_is_closer_to_the_exact_one_than_the_quantized_dot() {
        let (mut mixed_error, mut quantized_error) = (0f32, 0f32);
        for i in 0..200 {
            let (a, b) = (unit(i), unit(i + 5000));
            let exact = dot(&a, &b);
            mixed_error += (mixed_dot(&a, &quantize(&b)) - exact).abs();
            quantized_error += (quantized_dot(&quantize(&a), &quantize(&b)) - exact).abs();
            assert!((mixed_dot(&a, &quantize(&b)) - exact).abs() < 0.005);
        }
        assert!(mixed_error < quantized_error, "mixed {mixed_error}, quantized {quantized_error}");
    }

    #[test]
    fn every_version_of_the_integer_dot_gives_the_same_sum() {
        // Lengths around the 16-code step, and the extremes of the codes.
        for len in [0, 1, 15, 16, 17, 384, 390] {
            let a: Vec<i8> = (0..len).map(|i| [127, -127, 5, -3, 0][i % 5]).collect();
            let b: Vec<i8> = (0..len).map(|i| [-127, -127, 127, 9, 1][(i * 7) % 5]).collect();
            let expected: i32 = a.iter().zip(&b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
            assert_eq!(code_dot_portable(&a, &b), expected, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                assert_eq!(unsafe { code_dot_avx2(&a, &b) }, expected, "len {len}");
            }
        }
    }

    #[test]
    fn zero_vector_is_safe() {
        let zero = quantize(&[0.0; 384]);
        assert_eq!(quantized_dot(&zero, &zero), 0.0);
    }
}
