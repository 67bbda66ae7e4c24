//! Masks as polygons: the outer contour of each 8-connected part of a mask, traced along the
//! pixels' edges, then simplified by Douglas–Peucker.
//!
//! Vertices are pixel corners in target pixels (pixel `(x, y)` covers `[x, x + 1) × [y, y + 1)`),
//! so with tolerance 0 the pixels whose centres lie inside a part's polygon are exactly that
//! part with its holes filled. Holes are not cut out; a part inside another's hole has its own
//! polygon. A contour runs clockwise on screen (y down) from the part's top-left corner.

use super::extras::Parts;
use crate::imgproc::Image;

/// One step along a pixel edge: right, down, left, up (each a right turn from the last).
const STEP: [(i64, i64); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];

/// Per direction, the pixels ahead-left and ahead-right of a corner, as offsets from it.
const AHEAD: [[(i64, i64); 2]; 4] = [
    [(0, -1), (0, 0)],
    [(0, 0), (-1, 0)],
    [(-1, 0), (-1, -1)],
    [(-1, -1), (0, -1)],
];

/// Traces masks into polygons; its buffers are kept from mask to mask.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracer {
    /// Douglas–Peucker tolerance in pixels; 0 keeps every corner.
    tolerance: f32,
    parts: Parts,
    /// The corners of the contour being traced and which of them simplification keeps.
    ring: Vec<[i64; 2]>,
    keep: Vec<bool>,
    /// Ring index ranges still to simplify (the end may be the ring's length: its start).
    stack: Vec<(usize, usize)>,
}

impl Tracer {
    pub fn new(tolerance: f32) -> Self {
        Self {
            tolerance,
            ..Self::default()
        }
    }

    /// Appends one polygon per part of `mask`'s set (nonzero) pixels, placed with its top-left
    /// pixel at `(left, top)`: the vertices to `points`, then its end index in `points` to
    /// `ends`.
    pub fn trace(
        &mut self,
        mask: &Image,
        (left, top): (usize, usize),
        points: &mut Vec<[u32; 2]>,
        ends: &mut Vec<u32>,
    ) {
        self.parts.label(mask);
        for k in 0..self.parts.runs.len() {
            if self.parts.find(k) != k {
                continue;
            }
            let [y, x0, _] = self.parts.runs[k];
            self.contour(mask, [i64::from(x0), i64::from(y)]);
            self.simplify();
            let kept = self.ring.iter().zip(&self.keep).filter(|(_, k)| **k);
            points.extend(kept.map(|(&[x, y], _)| [x as u32 + left as u32, y as u32 + top as u32]));
            ends.push(points.len() as u32);
        }
    }

    /// Follows the edges between the part's pixels and the others, the part on the right,
    /// from `start`, the top-left corner of its first pixel in raster order (nothing of the
    /// part touches that corner but the pixel), into `ring`: the corners where it turns.
    fn contour(&mut self, mask: &Image, start: [i64; 2]) {
        let (w, h) = (mask.width as i64, mask.height as i64);
        let set = |x: i64, y: i64| {
            (0..w).contains(&x) && (0..h).contains(&y) && mask.data[(y * w + x) as usize] != 0
        };
        self.ring.clear();
        self.ring.push(start);
        let (mut v, mut d) = (start, 0);
        loop {
            v = [v[0] + STEP[d].0, v[1] + STEP[d].1];
            let [(lx, ly), (rx, ry)] = AHEAD[d];
            // A part pixel ahead-left touches the one behind-right at this corner: turn left
            // into it (8-connectivity); else straight on along the part, else right round it.
            let next = if set(v[0] + lx, v[1] + ly) {
                (d + 3) % 4
            } else if set(v[0] + rx, v[1] + ry) {
                d
            } else {
                (d + 1) % 4
            };
            if v == start && next == 0 {
                break;
            }
            if next != d {
                self.ring.push(v);
            }
            d = next;
        }
    }

    /// Marks in `keep` the corners Douglas–Peucker keeps: split at the corner farthest from
    /// the start, then at the farthest from each chord while it is beyond the tolerance. A
    /// ring that would keep fewer than three corners keeps them all.
    fn simplify(&mut self) {
        let n = self.ring.len();
        self.keep.clear();
        self.keep.resize(n, self.tolerance <= 0.0);
        if self.tolerance <= 0.0 {
            return;
        }
        let ring = &self.ring;
        let at = |i: usize| ring[i % n].map(|c| c as f64);
        let far = (1..n)
            .max_by(|&a, &b| {
                distance(at(0), at(0), at(a)).total_cmp(&distance(at(0), at(0), at(b)))
            })
            .unwrap_or(0);
        self.keep[0] = true;
        self.keep[far] = true;
        self.stack.clear();
        self.stack.extend([(0, far), (far, n)]);
        let tolerance = f64::from(self.tolerance);
        while let Some((a, b)) = self.stack.pop() {
            let worst = (a + 1..b)
                .map(|i| (i, distance(at(a), at(b), at(i))))
                .max_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((i, d)) = worst
                && d > tolerance
            {
                self.keep[i] = true;
                self.stack.extend([(a, i), (i, b)]);
            }
        }
        if self.keep.iter().filter(|&&k| k).count() < 3 {
            self.keep.fill(true);
        }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn distance(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p[0] - a[0] - t * dx).hypot(p[1] - a[1] - t * dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether `(x, y)` lies inside `polygon` (crossing number; pixel centres never lie on
    /// its edges, which run along pixel edges or between corners).
    fn inside(polygon: &[[u32; 2]], x: f64, y: f64) -> bool {
        let mut inside = false;
        for (i, &[x1, y1]) in polygon.iter().enumerate() {
            let [x2, y2] = polygon[(i + 1) % polygon.len()];
            let (x1, y1, x2, y2) = (x1 as f64, y1 as f64, x2 as f64, y2 as f64);
            if (y1 > y) != (y2 > y) && x < x1 + (y - y1) * (x2 - x1) / (y2 - y1) {
                inside = !inside;
            }
        }
        inside
    }

    /// The mask with its holes filled: every pixel the outside (4-connected clear pixels
    /// reached from beyond the border) does not reach.
    fn filled(w: usize, h: usize, bits: &[bool]) -> Vec<bool> {
        let (pw, ph) = (w + 2, h + 2);
        let set = |x: usize, y: usize| {
            (1..=w).contains(&x) && (1..=h).contains(&y) && bits[(y - 1) * w + x - 1]
        };
        let mut outside = vec![false; pw * ph];
        let mut todo = vec![(0, 0)];
        outside[0] = true;
        while let Some((x, y)) = todo.pop() {
            let (x, y): (usize, usize) = (x, y);
            let near = [
                (x.wrapping_sub(1), y),
                (x + 1, y),
                (x, y.wrapping_sub(1)),
                (x, y + 1),
            ];
            for (nx, ny) in near {
                if nx < pw && ny < ph && !set(nx, ny) && !outside[ny * pw + nx] {
                    outside[ny * pw + nx] = true;
                    todo.push((nx, ny));
                }
            }
        }
        (0..w * h)
            .map(|i| !outside[(i / w + 1) * pw + i % w + 1])
            .collect()
    }

    fn traced(
        tolerance: f32,
        w: usize,
        h: usize,
        bits: &[bool],
        at: (usize, usize),
    ) -> Vec<Vec<[u32; 2]>> {
        let mask =
            Image::from_vec(w, h, 1, bits.iter().map(|&b| u8::from(b) * 255).collect()).unwrap();
        let (mut points, mut ends) = (Vec::new(), Vec::new());
        Tracer::new(tolerance).trace(&mask, at, &mut points, &mut ends);
        let mut start = 0;
        ends.iter()
            .map(|&e| {
                let p = points[start..e as usize].to_vec();
                start = e as usize;
                p
            })
            .collect()
    }

    fn masks() -> impl Strategy<Value = (usize, usize, Vec<bool>)> {
        (1usize..16, 1usize..16).prop_flat_map(|(w, h)| {
            (
                Just(w),
                Just(h),
                prop::collection::vec(prop::bool::weighted(0.5), w * h),
            )
        })
    }

    proptest! {
        /// Unsimplified, the polygons fill exactly the mask with its holes filled, one per
        /// 8-connected part, offset to where the mask is placed.
        #[test]
        fn exact_polygons_fill_the_mask((w, h, bits) in masks(), left in 0usize..5, top in 0usize..5) {
            use crate::imgproc::regions::{Connectivity, connected_components};
            let polygons = traced(0.0, w, h, &bits, (left, top));
            let mask = Image::from_vec(w, h, 1, bits.iter().map(|&b| u8::from(b) * 255).collect()).unwrap();
            let (mut labels, mut stats) = (Image::new(0, 0, 1), Vec::new());
            connected_components(&mask, &mut labels, &mut stats, Connectivity::Eight).unwrap();
            prop_assert_eq!(polygons.len(), stats.len() - 1);
            let want = filled(w, h, &bits);
            for y in 0..h {
                for x in 0..w {
                    let (cx, cy) = ((x + left) as f64 + 0.5, (y + top) as f64 + 0.5);
                    let n = polygons.iter().filter(|p| inside(p, cx, cy)).count();
                    prop_assert_eq!(n > 0, want[y * w + x], "({}, {}) in {:?}", x, y, polygons);
                }
            }
            for p in &polygons {
                prop_assert!(p.len() >= 4 && p.len() % 2 == 0, "{:?}", p);
                prop_assert!(p.iter().all(|&[x, y]| (left..=left + w).contains(&(x as usize))
                    && (top..=top + h).contains(&(y as usize))));
            }
        }

        /// Simplified, every corner of the exact contour stays within the tolerance of the
        /// polygon, whose corners are some of those corners.
        #[test]
        fn simplified_polygons_stay_within_tolerance((w, h, bits) in masks(), tolerance in 0.5f32..3.0) {
            let exact = traced(0.0, w, h, &bits, (0, 0));
            let simple = traced(tolerance, w, h, &bits, (0, 0));
            prop_assert_eq!(exact.len(), simple.len());
            let f = |[x, y]: [u32; 2]| [x as f64, y as f64];
            for (e, s) in exact.iter().zip(&simple) {
                prop_assert!(s.len() >= 3 && s.len() <= e.len());
                prop_assert!(s.iter().all(|p| e.contains(p)));
                for &p in e {
                    let d = (0..s.len())
                        .map(|i| distance(f(s[i]), f(s[(i + 1) % s.len()]), f(p)))
                        .fold(f64::INFINITY, f64::min);
                    prop_assert!(d <= f64::from(tolerance) + 1e-9, "{:?} is {} from {:?}", p, d, s);
                }
            }
        }
    }

    #[test]
    fn diagonal_pixels_make_one_part_and_a_ring_keeps_its_hole_filled() {
        #[rustfmt::skip]
        let bits = [
            1, 0, 0, 0, 0,
            0, 1, 1, 1, 0,
            0, 1, 0, 1, 0,
            0, 1, 1, 1, 0,
        ].map(|b| b == 1);
        // The corner pixel meets the ring at (11, 21): the contour passes there twice.
        assert_eq!(
            traced(0.0, 5, 4, &bits, (10, 20)),
            [[
                [10, 20],
                [11, 20],
                [11, 21],
                [14, 21],
                [14, 24],
                [11, 24],
                [11, 21],
                [10, 21]
            ]]
        );
    }
}
