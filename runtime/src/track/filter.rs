//! A constant-velocity Kalman filter on a box's centre and size, as SORT and ByteTrack use.
//!
//! The state is `[cx, cy, w, h]` and their velocities. With the block-diagonal noise of
//! BoT-SORT's `KalmanFilterXYWH`, each coordinate and its velocity form an independent
//! two-state filter, so four scalar filters give exactly the result of the 8×8 one at a
//! fraction of the arithmetic, with no matrix type.

use crate::detect::BBox;

/// Process and measurement noise, as fractions of the box side (BoT-SORT's weights).
const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 1.0 / 160.0;

/// One coordinate: its value and velocity, and their covariance `[[a, b], [b, c]]`.
#[derive(Clone, Copy, Debug)]
struct Axis {
    p: f32,
    v: f32,
    a: f32,
    b: f32,
    c: f32,
}

impl Axis {
    fn new(p: f32, side: f32) -> Self {
        let (sp, sv) = (2.0 * STD_POSITION * side, 10.0 * STD_VELOCITY * side);
        Self {
            p,
            v: 0.0,
            a: sp * sp,
            b: 0.0,
            c: sv * sv,
        }
    }

    fn predict(&mut self, side: f32) {
        let (qp, qv) = (STD_POSITION * side, STD_VELOCITY * side);
        self.p += self.v;
        self.a += 2.0 * self.b + self.c + qp * qp;
        self.b += self.c;
        self.c += qv * qv;
    }

    fn update(&mut self, z: f32, side: f32) {
        let r = STD_POSITION * side;
        let s = self.a + r * r;
        let (k0, k1) = (self.a / s, self.b / s);
        let innovation = z - self.p;
        self.p += k0 * innovation;
        self.v += k1 * innovation;
        self.c -= k1 * self.b;
        self.a *= 1.0 - k0;
        self.b *= 1.0 - k0;
    }
}

/// A box's estimated centre and size.
#[derive(Clone, Copy, Debug)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

/// `[cx, cy, w, h]` of a box, and which side (w or h) scales each coordinate's noise.
fn measure(b: &BBox) -> ([f32; 4], [f32; 4]) {
    let (w, h) = ((b.x2 - b.x1).max(1.0), (b.y2 - b.y1).max(1.0));
    (
        [(b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0, w, h],
        [w, h, w, h],
    )
}

impl BoxFilter {
    pub fn new(b: &BBox) -> Self {
        let (z, sides) = measure(b);
        Self {
            axes: std::array::from_fn(|i| Axis::new(z[i], sides[i])),
        }
    }

    /// Moves the estimate one frame ahead.
    pub fn predict(&mut self) {
        let (w, h) = (self.axes[2].p.max(1.0), self.axes[3].p.max(1.0));
        for (axis, side) in self.axes.iter_mut().zip([w, h, w, h]) {
            axis.predict(side);
        }
    }

    /// Corrects the estimate with a measured box.
    pub fn update(&mut self, b: &BBox) {
        let (z, _) = measure(b);
        let (w, h) = (self.axes[2].p.max(1.0), self.axes[3].p.max(1.0));
        for ((axis, z), side) in self.axes.iter_mut().zip(z).zip([w, h, w, h]) {
            axis.update(z, side);
        }
    }

    /// The estimated box; sides never shrink below one pixel.
    pub fn bbox(&self) -> BBox {
        let [cx, cy, w, h] = self.axes.map(|a| a.p);
        let (w, h) = (w.max(1.0) / 2.0, h.max(1.0) / 2.0);
        BBox {
            x1: cx - w,
            y1: cy - h,
            x2: cx + w,
            y2: cy + h,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x: f32, y: f32) -> BBox {
        BBox {
            x1: x,
            y1: y,
            x2: x + 40.0,
            y2: y + 80.0,
        }
    }

    #[test]
    fn learns_a_constant_velocity_and_predicts_through_a_gap() {
        let mut f = BoxFilter::new(&bbox(0.0, 100.0));
        for t in 1..20 {
            f.predict();
            f.update(&bbox(5.0 * t as f32, 100.0 - 2.0 * t as f32));
        }
        for _ in 0..5 {
            f.predict();
        }
        // Measured at t = 19; five frames later the box should be near t = 24.
        let b = f.bbox();
        let want = bbox(120.0, 52.0);
        assert!(b.iou(&want) > 0.9, "{b:?} vs {want:?}");
    }

    #[test]
    fn a_still_box_stays_put() {
        let b = bbox(10.0, 10.0);
        let mut f = BoxFilter::new(&b);
        for _ in 0..10 {
            f.predict();
            f.update(&b);
        }
        f.predict();
        assert!(f.bbox().iou(&b) > 0.99, "{:?}", f.bbox());
    }
}
