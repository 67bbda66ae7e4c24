//! Polygon zones in source-image pixels, and the point of a box that is tested against them.

use serde::{Deserialize, Serialize};

use crate::detect::BBox;

/// Longest zone name, in bytes; names are kept inline so that events stay `Copy`.
pub const MAX_ZONE_NAME: usize = 32;

/// A configured zone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Named in events; at most [`MAX_ZONE_NAME`] bytes.
    pub name: String,
    /// Corners `[x, y]` in source-image pixels, in order around the zone (at least three).
    pub polygon: Vec<[f32; 2]>,
}

/// Which point of a box decides whether it is in a zone.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// Where the object touches the ground, for people and vehicles seen from above or aside.
    #[default]
    BottomCenter,
    Center,
}

impl Anchor {
    pub fn of(self, b: &BBox) -> [f32; 2] {
        let x = (b.x1 + b.x2) / 2.0;
        match self {
            Anchor::BottomCenter => [x, b.y2],
            Anchor::Center => [x, (b.y1 + b.y2) / 2.0],
        }
    }
}

/// A zone's name, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ZoneName {
    len: u8,
    bytes: [u8; MAX_ZONE_NAME],
}

impl ZoneName {
    /// `None` when `name` is longer than [`MAX_ZONE_NAME`] bytes.
    pub fn new(name: &str) -> Option<Self> {
        let mut bytes = [0; MAX_ZONE_NAME];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(Self {
            len: name.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("made from a whole str that fits")
    }
}

impl std::fmt::Debug for ZoneName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Whether `p` lies inside `polygon` (even-odd rule; points on an edge may go either way).
pub fn contains(polygon: &[[f32; 2]], p: [f32; 2]) -> bool {
    let [x, y] = p;
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for (i, &[xi, yi]) in polygon.iter().enumerate() {
        let [xj, yj] = polygon[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_convex_and_concave_polygons() {
        let square = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        // An L: the square without its top-right quarter.
        let l = [
            [0.0, 0.0],
            [5.0, 0.0],
            [5.0, 5.0],
            [10.0, 5.0],
            [10.0, 10.0],
            [0.0, 10.0],
        ];
        for (polygon, p, inside) in [
            (&square[..], [5.0, 5.0], true),
            (&square[..], [11.0, 5.0], false),
            (&square[..], [-0.1, 5.0], false),
            (&l[..], [2.0, 2.0], true),
            (&l[..], [7.0, 2.0], false),
            (&l[..], [7.0, 7.0], true),
        ] {
            assert_eq!(contains(polygon, p), inside, "{p:?} in {polygon:?}");
        }
    }

    #[test]
    fn anchors_and_names() {
        let b = BBox {
            x1: 10.0,
            y1: 20.0,
            x2: 30.0,
            y2: 60.0,
        };
        assert_eq!(Anchor::BottomCenter.of(&b), [20.0, 60.0]);
        assert_eq!(Anchor::Center.of(&b), [20.0, 40.0]);
        assert_eq!(ZoneName::new("door").unwrap().as_str(), "door");
        assert!(ZoneName::new(&"x".repeat(MAX_ZONE_NAME + 1)).is_none());
    }
}
