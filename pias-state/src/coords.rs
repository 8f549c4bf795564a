//! Vivaldi network coordinates with height vectors: each proxy estimates the RTT to any other proxy from
//! two small coordinates, without measuring it.
//!
//! A RAP picks the JAP closest to an IAP; it cannot ping every pair, so every proxy keeps a coordinate
//! that it refines from the RTTs it does measure (Dabek, Cox, Kaashoek, Morris, "Vivaldi: A Decentralized
//! Network Coordinate System", SIGCOMM 2004), and floods it with its membership record.
//!
//! # Rule (SPEC.md, network coordinates)
//!
//! Units are milliseconds. A coordinate is a point `x` in the plane, a height `h` (the access-link delay,
//! `>=` [`HEIGHT_MIN`]) and an error estimate `e` in `[ERROR_MIN, ERROR_MAX]` (a new node starts at the
//! origin with `h = HEIGHT_MIN`, `e = ERROR_MAX`). Height-vector arithmetic: `[x, hx] − [y, hy] =
//! [x − y, hx + hy]`, `‖[x, h]‖ = |x| + h`; so the predicted RTT is `|xi − xj| + hi + hj`.
//!
//! On a measured RTT `rtt` to a node with coordinate `j` (after the checks below), node `i` does, with
//! `CE = CC = 0.25`:
//!
//! ```text
//! w     = ei / (ei + ej)
//! dist  = |xi − xj| + hi + hj
//! es    = |dist − rtt| / rtt
//! ei    = clamp(es·CE·w + ei·(1 − CE·w), ERROR_MIN, ERROR_MAX)
//! f     = CC · w · (rtt − dist)
//! if |xi − xj| > 1e-6:   xi += f · (xi − xj) / dist;   hi += f · (hi + hj) / dist
//! else:                  xi += f · u(seed)            (height unchanged)
//! hi    = clamp(hi, HEIGHT_MIN, MAX_MAGNITUDE);  each xi component clamped to ±MAX_MAGNITUDE
//! ```
//!
//! `u(seed)` is a unit vector derived from a caller-provided `u64` (for instance the remote's proxy id):
//! `z = splitmix64(seed)`, `a = (z >> 32) as i32 as f64`, `b = z as u32 as i32 as f64`, `u = (a, b)/|(a, b)|`,
//! or `(1, 0)` if `a = b = 0`. No random source: the same inputs give the same coordinate.
//!
//! Guards (SPEC §7.5): a remote coordinate with a non-finite field is rejected ([`CoordError::NonFinite`]),
//! and so is one with a field of magnitude above [`MAX_MAGNITUDE`] = 10^6 ([`CoordError::OutOfRange`]); the
//! sample is then ignored. Accepted fields are clamped: height to `[HEIGHT_MIN, MAX_MAGNITUDE]`, error to
//! `[ERROR_MIN, ERROR_MAX]`. An RTT of zero or above `MAX_MAGNITUDE` ms is rejected likewise. Our own
//! result is clamped (components to ±`MAX_MAGNITUDE`, height as above), and if the update would still
//! produce a non-finite value the coordinate is left unchanged and the update rejected. So no input can make
//! a coordinate NaN, infinite, or one that other proxies would reject.
//!
//! Wire form, 16 bytes: `x0`, `x1`, `h`, `e`, each an IEEE-754 binary32, big-endian, in that order (units
//! ms; `e` dimensionless). Decoding applies the same checks as a remote coordinate.

use core::time::Duration;

/// Coefficient of the error update.
pub const CE: f64 = 0.25;
/// Coefficient of the position update.
pub const CC: f64 = 0.25;
/// Smallest height, ms (10 µs).
pub const HEIGHT_MIN: f64 = 0.01;
/// Largest error estimate (that of a new node).
pub const ERROR_MAX: f64 = 1.5;
/// Smallest error estimate (keeps the weight positive so a node never freezes).
pub const ERROR_MIN: f64 = 1e-3;
/// Largest accepted magnitude of a coordinate field or an RTT (ms for positions, height and RTT).
pub const MAX_MAGNITUDE: f64 = 1_000_000.0;
/// Bytes of the wire form.
pub const WIRE_LEN: usize = 16;

const ZERO_DISTANCE: f64 = 1e-6;

/// Why an update or a decode was refused. The coordinate is unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// A field was NaN or infinite (or the update would have produced one). Nothing changed.
    #[error("non-finite coordinate value")]
    NonFinite,
    /// A field or the RTT exceeded [`MAX_MAGNITUDE`]. Nothing changed.
    #[error("coordinate value or RTT out of range")]
    OutOfRange,
    /// A zero RTT carries no information (and cannot be a relative error's denominator). Nothing changed.
    #[error("zero RTT sample")]
    ZeroRtt,
}

/// A Vivaldi coordinate with height. Always finite and within the clamps (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coord {
    x: [f64; 2],
    height: f64,
    error: f64,
}

impl Default for Coord {
    fn default() -> Self {
        Coord {
            x: [0.0; 2],
            height: HEIGHT_MIN,
            error: ERROR_MAX,
        }
    }
}

fn clamp_component(v: f64) -> f64 {
    v.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
}

/// The deterministic unit vector `u(seed)` of the rule.
fn direction(seed: u64) -> [f64; 2] {
    let z = crate::rng::mix(seed);
    let a = f64::from((z >> 32) as u32 as i32);
    let b = f64::from(z as u32 as i32);
    let n = (a * a + b * b).sqrt();
    if n > 0.0 { [a / n, b / n] } else { [1.0, 0.0] }
}

impl Coord {
    /// A new node's coordinate: the origin, minimum height, maximum error.
    pub fn new() -> Self {
        Self::default()
    }

    /// A coordinate from its parts (ms), checked and clamped as a remote coordinate is.
    pub fn from_parts(x: [f64; 2], height: f64, error: f64) -> Result<Self, CoordError> {
        let fields = [x[0], x[1], height, error];
        if !fields.iter().all(|v| v.is_finite()) {
            return Err(CoordError::NonFinite);
        }
        if fields.iter().any(|v| v.abs() > MAX_MAGNITUDE) {
            return Err(CoordError::OutOfRange);
        }
        Ok(Self::clamped(x, height, error))
    }

    /// Our own result, clamped into range (the caller has checked it is finite).
    fn clamped(x: [f64; 2], height: f64, error: f64) -> Self {
        Coord {
            x: [clamp_component(x[0]), clamp_component(x[1])],
            height: height.clamp(HEIGHT_MIN, MAX_MAGNITUDE),
            error: error.clamp(ERROR_MIN, ERROR_MAX),
        }
    }

    /// The position in the plane, ms.
    pub fn position(&self) -> [f64; 2] {
        self.x
    }

    /// The height, ms.
    pub fn height(&self) -> f64 {
        self.height
    }

    /// The error estimate (relative; 1.5 for a new node, falling as it converges).
    pub fn error(&self) -> f64 {
        self.error
    }

    /// The predicted RTT to `other`, in milliseconds: `|xi − xj| + hi + hj`.
    pub fn distance_ms(&self, other: &Coord) -> f64 {
        let dx = self.x[0] - other.x[0];
        let dy = self.x[1] - other.x[1];
        (dx * dx + dy * dy).sqrt() + self.height + other.height
    }

    /// The predicted RTT to `other`, rounded to the microsecond.
    pub fn distance(&self, other: &Coord) -> Duration {
        // Finite and at most ~4·MAX_MAGNITUDE ms by construction; `as` saturates anyway.
        Duration::from_micros((self.distance_ms(other) * 1000.0).round() as u64)
    }

    /// Refines this coordinate from one RTT sample to a node whose coordinate is `remote`.
    ///
    /// `seed` picks the push direction when the two positions coincide (use the remote's proxy id). On
    /// `Err` nothing changed.
    pub fn update(&mut self, remote: &Coord, rtt: Duration, seed: u64) -> Result<(), CoordError> {
        // Re-check the remote: a `Coord` is valid by construction, but this keeps the guard local.
        let r = Coord::from_parts(remote.x, remote.height, remote.error)?;
        if rtt.is_zero() {
            return Err(CoordError::ZeroRtt);
        }
        let rtt = rtt.as_secs_f64() * 1000.0;
        if rtt > MAX_MAGNITUDE {
            return Err(CoordError::OutOfRange);
        }

        let dx = [self.x[0] - r.x[0], self.x[1] - r.x[1]];
        let mag = (dx[0] * dx[0] + dx[1] * dx[1]).sqrt();
        let dist = mag + self.height + r.height;
        let w = self.error / (self.error + r.error);
        let es = (dist - rtt).abs() / rtt;
        let error = (es * CE * w + self.error * (1.0 - CE * w)).clamp(ERROR_MIN, ERROR_MAX);
        let force = CC * w * (rtt - dist);

        let (x, height) = if mag > ZERO_DISTANCE {
            (
                [self.x[0] + force * dx[0] / dist, self.x[1] + force * dx[1] / dist],
                self.height + force * (self.height + r.height) / dist,
            )
        } else {
            let u = direction(seed);
            ([self.x[0] + force * u[0], self.x[1] + force * u[1]], self.height)
        };
        if !(x[0].is_finite() && x[1].is_finite() && height.is_finite() && error.is_finite()) {
            return Err(CoordError::NonFinite);
        }
        *self = Coord::clamped(x, height, error);
        Ok(())
    }

    /// The 16-byte wire form: `x0`, `x1`, height, error as binary32 big-endian.
    pub fn to_bytes(&self) -> [u8; WIRE_LEN] {
        let mut b = [0u8; WIRE_LEN];
        for (i, v) in [self.x[0], self.x[1], self.height, self.error]
            .into_iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&(v as f32).to_be_bytes());
        }
        b
    }

    /// Decodes the wire form, with the checks and clamps of a remote coordinate.
    pub fn from_bytes(b: &[u8; WIRE_LEN]) -> Result<Self, CoordError> {
        let f = |i: usize| f64::from(f32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
        Coord::from_parts([f(0), f(4)], f(8), f(12))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn unit(s: &mut u64) -> f64 {
        (xorshift(s) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    /// 30 nodes in a 200 ms × 200 ms plane with 1–10 ms access delays; 60 000 samples between random
    /// pairs; each sample multiplied by a random factor in `[1, 1 + jitter)` (queueing only adds delay).
    /// Returns the median relative prediction error against the noise-free matrix, before and after.
    fn simulate(jitter: f64, seed: u64) -> (f64, f64) {
        const N: usize = 30;
        let mut s = seed;
        let pos: Vec<[f64; 2]> = (0..N)
            .map(|_| [unit(&mut s) * 200.0, unit(&mut s) * 200.0])
            .collect();
        let access: Vec<f64> = (0..N).map(|_| 1.0 + unit(&mut s) * 9.0).collect();
        let rtt = |i: usize, j: usize| {
            let (dx, dy) = (pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]);
            (dx * dx + dy * dy).sqrt() + access[i] + access[j]
        };
        let mut c = vec![Coord::new(); N];
        let median_error = |c: &[Coord]| {
            let mut errs = Vec::new();
            for i in 0..N {
                for j in i + 1..N {
                    errs.push((c[i].distance_ms(&c[j]) - rtt(i, j)).abs() / rtt(i, j));
                }
            }
            errs.sort_by(f64::total_cmp);
            errs[errs.len() / 2]
        };
        let before = median_error(&c);
        for _ in 0..60_000 {
            let i = (xorshift(&mut s) % N as u64) as usize;
            let j = (xorshift(&mut s) % N as u64) as usize;
            if i == j {
                continue;
            }
            let remote = c[j];
            let sample = rtt(i, j) * (1.0 + jitter * unit(&mut s));
            c[i].update(&remote, ms(sample), j as u64).unwrap();
        }
        assert!(c.iter().all(|x| x.height() >= HEIGHT_MIN));
        (before, median_error(&c))
    }

    /// The median relative prediction error falls below 0.2 after convergence, with and without jitter.
    #[test]
    fn converges_on_synthetic_latencies() {
        for (jitter, seed) in [
            (0.0, 0x2545_f491_4f6c_dd1d),
            (0.2, 0x9e37_79b9_7f4a_7c15),
            (0.2, 77),
        ] {
            let (before, after) = simulate(jitter, seed);
            eprintln!("vivaldi jitter {jitter}: median relative error {before:.3} -> {after:.4}");
            assert!(after < 0.2, "jitter {jitter}: median relative error {after}");
        }
    }

    #[test]
    fn coincident_nodes_separate_deterministically() {
        let mut a = Coord::new();
        let b = Coord::new();
        a.update(&b, ms(50.0), 7).unwrap();
        assert!(a.position() != [0.0, 0.0]);
        let mut a2 = Coord::new();
        a2.update(&b, ms(50.0), 7).unwrap();
        assert_eq!(a, a2);
        let mut a3 = Coord::new();
        a3.update(&b, ms(50.0), 8).unwrap();
        assert_ne!(a.position(), a3.position());
        let d = direction(0);
        assert!(((d[0] * d[0] + d[1] * d[1]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn non_finite_inputs_are_rejected() {
        let mut c = Coord::new();
        c.update(&Coord::from_parts([3.0, 4.0], 1.0, 0.5).unwrap(), ms(20.0), 1)
            .unwrap();
        let before = c;
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                Coord::from_parts([bad, 0.0], 1.0, 1.0),
                Err(CoordError::NonFinite)
            );
            assert_eq!(
                Coord::from_parts([0.0, bad], 1.0, 1.0),
                Err(CoordError::NonFinite)
            );
            assert_eq!(
                Coord::from_parts([0.0, 0.0], bad, 1.0),
                Err(CoordError::NonFinite)
            );
            assert_eq!(
                Coord::from_parts([0.0, 0.0], 1.0, bad),
                Err(CoordError::NonFinite)
            );
            let mut b = Coord::new().to_bytes();
            b[8..12].copy_from_slice(&(bad as f32).to_be_bytes());
            assert_eq!(Coord::from_bytes(&b), Err(CoordError::NonFinite));
            // A remote forged through struct update (same module) is still refused by `update`.
            let forged = Coord {
                x: [bad, 1.0],
                ..Coord::new()
            };
            assert_eq!(c.update(&forged, ms(10.0), 1), Err(CoordError::NonFinite));
        }
        assert_eq!(
            c.update(&Coord::new(), Duration::ZERO, 1),
            Err(CoordError::ZeroRtt)
        );
        assert_eq!(c, before);
        // Magnitudes above 10^6 are rejected; the largest accepted ones keep the result finite and in range.
        assert_eq!(
            Coord::from_parts([f64::MAX, 0.0], 1.0, 1.0),
            Err(CoordError::OutOfRange)
        );
        assert_eq!(
            Coord::from_parts([0.0, 0.0], 1.0, -2e6),
            Err(CoordError::OutOfRange)
        );
        assert_eq!(
            c.update(&Coord::new(), Duration::MAX, 1),
            Err(CoordError::OutOfRange)
        );
        assert_eq!(c, before);
        let huge = Coord::from_parts([MAX_MAGNITUDE, -MAX_MAGNITUDE], MAX_MAGNITUDE, MAX_MAGNITUDE).unwrap();
        assert_eq!(huge.error(), ERROR_MAX);
        for _ in 0..100 {
            c.update(&huge, Duration::from_secs(1000), 1).unwrap();
            let back = Coord::from_bytes(&c.to_bytes()).unwrap();
            assert!(back.position().iter().all(|v| v.abs() <= MAX_MAGNITUDE));
        }
        assert!(c.distance(&huge) < Duration::from_secs(10_000));
    }

    #[test]
    fn wire_round_trip() {
        let c = Coord::from_parts([12.5, -3.25], 4.0, 0.75).unwrap();
        let b = c.to_bytes();
        assert_eq!(&b[..4], &12.5f32.to_be_bytes());
        assert_eq!(&b[12..], &0.75f32.to_be_bytes());
        assert_eq!(Coord::from_bytes(&b).unwrap(), c);
        assert_eq!(
            c.distance(&Coord::from_parts([12.5, -3.25], 1.0, 1.0).unwrap()),
            Duration::from_millis(5)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_makes_nan(
            steps in proptest::collection::vec((any::<[u8; 16]>(), any::<u64>(), any::<u64>()), 1..50),
        ) {
            let mut c = Coord::new();
            for (bytes, rtt_ns, seed) in steps {
                if let Ok(r) = Coord::from_bytes(&bytes) {
                    let _ = c.update(&r, Duration::from_nanos(rtt_ns), seed);
                }
                prop_assert!(c.position().iter().all(|v| v.is_finite() && v.abs() <= MAX_MAGNITUDE));
                prop_assert!(c.height().is_finite() && c.height() >= HEIGHT_MIN);
                prop_assert!((ERROR_MIN..=ERROR_MAX).contains(&c.error()));
                let _ = c.distance(&c);
            }
        }
    }
}
