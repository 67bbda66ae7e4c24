//! Connected components with statistics, numbered like OpenCV's
//! `connectedComponentsWithStats` (default algorithm), and their bounding boxes.
//!
//! OpenCV's default algorithms label 4-connected components pixel by pixel (SAUF-like) and
//! 8-connected ones by 2×2 blocks (Spaghetti). Their labels therefore follow the raster order
//! of each component's first pixel (4-connectivity) or first 2×2 block (8-connectivity: blocks
//! in raster order, starting at even rows and columns). The labelling here is a plain two-pass
//! union-find; the final numbering pass walks the image in OpenCV's order.

use thiserror::Error;

use super::Image;
use crate::detect::BBox;

/// Errors of the connected-component functions.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegionError {
    /// The image has several channels: label a single-channel mask (any nonzero = foreground).
    #[error("connected components need a single-channel image, got {channels} channels")]
    NotSingleChannel { channels: usize },
}

/// Which neighbours join a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connectivity {
    /// Left, right, up, down.
    Four,
    /// The four above plus the diagonals.
    Eight,
}

/// Statistics of one label, as OpenCV's `stats` row and `centroids` row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComponentStats {
    /// Leftmost column; -1 for a label without pixels (OpenCV's value).
    pub left: i32,
    /// Topmost row; `i32::MAX` for a label without pixels (OpenCV's value).
    pub top: i32,
    pub width: i32,
    pub height: i32,
    /// Number of pixels.
    pub area: i32,
    /// Mean (x, y) of the pixels; NaN for a label without pixels.
    pub centroid: (f64, f64),
}

impl ComponentStats {
    /// The pixel box `[left, left + width) × [top, top + height)`.
    pub fn bbox(&self) -> BBox {
        BBox {
            x1: self.left as f32,
            y1: self.top as f32,
            x2: (self.left + self.width) as f32,
            y2: (self.top + self.height) as f32,
        }
    }
}

/// OpenCV's `connectedComponentsWithStats(src, labels, stats, centroids, connectivity, CV_32S)`:
/// labels every pixel of `src` (0 = background, any nonzero = foreground), fills `stats` with
/// one entry per label (background first) and returns the number of labels. `labels` and
/// `stats` are resized, reusing their allocations.
pub fn connected_components(
    src: &Image,
    labels: &mut Image<i32>,
    stats: &mut Vec<ComponentStats>,
    connectivity: Connectivity,
) -> Result<usize, RegionError> {
    Labeler::default().label(src, labels, stats, connectivity)
}

/// [`connected_components`] with its union-find tables kept between calls, so labelling a
/// stream of same-sized masks allocates nothing once the tables have grown.
#[derive(Clone, Debug, Default)]
pub struct Labeler {
    parent: Vec<u32>,
    number: Vec<u32>,
    acc: Vec<Acc>,
}

impl Labeler {
    /// As [`connected_components`].
    pub fn label(
        &mut self,
        src: &Image,
        labels: &mut Image<i32>,
        stats: &mut Vec<ComponentStats>,
        connectivity: Connectivity,
    ) -> Result<usize, RegionError> {
        let Self {
            parent,
            number,
            acc,
        } = self;
        if src.channels != 1 {
            return Err(RegionError::NotSingleChannel {
                channels: src.channels,
            });
        }
        let (w, h) = (src.width, src.height);
        labels.reshape(w, h, 1);
        // First pass: provisional labels; each component's root is its smallest label.
        parent.clear();
        parent.push(0);
        let neighbours: &[(isize, isize)] = match connectivity {
            Connectivity::Four => &[(0, -1), (-1, 0)],
            Connectivity::Eight => &[(-1, -1), (0, -1), (1, -1), (-1, 0)],
        };
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if src.data[i] == 0 {
                    labels.data[i] = 0;
                    continue;
                }
                let mut label = 0;
                for &(dx, dy) in neighbours {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize {
                        continue;
                    }
                    let n = labels.data[ny as usize * w + nx as usize] as u32;
                    if n != 0 {
                        label = if label == 0 {
                            find(parent, n)
                        } else {
                            union(parent, label, n)
                        };
                    }
                }
                if label == 0 {
                    label = parent.len() as u32;
                    parent.push(label);
                }
                labels.data[i] = label as i32;
            }
        }
        // Final numbers in OpenCV's order of first pixel (4) or first 2×2 block (8).
        number.clear();
        number.resize(parent.len(), 0);
        let mut count = 1;
        let mut visit = |x: usize, y: usize| {
            let p = labels.data[y * w + x] as u32;
            if p != 0 {
                let root = find(parent, p) as usize;
                if number[root] == 0 {
                    number[root] = count;
                    count += 1;
                }
            }
        };
        match connectivity {
            Connectivity::Four => (0..h).for_each(|y| (0..w).for_each(|x| visit(x, y))),
            Connectivity::Eight => {
                for by in (0..h).step_by(2) {
                    for bx in (0..w).step_by(2) {
                        for (x, y) in [(bx, by), (bx + 1, by), (bx, by + 1), (bx + 1, by + 1)] {
                            if x < w && y < h {
                                visit(x, y);
                            }
                        }
                    }
                }
            }
        }
        for p in 1..parent.len() {
            number[p] = number[find(parent, p as u32) as usize];
        }
        // Relabel and gather statistics.
        let n = count as usize;
        acc.clear();
        acc.resize(n, Acc::default());
        for y in 0..h {
            for (x, l) in labels.row_mut(y).iter_mut().enumerate() {
                *l = number[*l as usize] as i32;
                acc[*l as usize].add(x, y);
            }
        }
        stats.clear();
        stats.extend(acc.iter().map(Acc::stats));
        Ok(n)
    }
}

/// `(label, box)` of every foreground component with at least `min_area` pixels.
pub fn region_boxes(
    stats: &[ComponentStats],
    min_area: i32,
) -> impl Iterator<Item = (usize, BBox)> + '_ {
    stats
        .iter()
        .enumerate()
        .skip(1)
        .filter(move |(_, s)| s.area >= min_area)
        .map(|(l, s)| (l, s.bbox()))
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    let mut root = i;
    while parent[root as usize] != root {
        root = parent[root as usize];
    }
    while parent[i as usize] != root {
        let next = parent[i as usize];
        parent[i as usize] = root;
        i = next;
    }
    root
}

/// Joins the components of `a` and `b`; the smaller root wins.
fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let root = ra.min(rb);
    parent[ra.max(rb) as usize] = root;
    root
}

#[derive(Clone, Copy, Debug)]
struct Acc {
    min: (usize, usize),
    max: (usize, usize),
    sum: (u64, u64),
    area: u64,
}

impl Default for Acc {
    fn default() -> Self {
        Self {
            min: (usize::MAX, usize::MAX),
            max: (0, 0),
            sum: (0, 0),
            area: 0,
        }
    }
}

impl Acc {
    fn add(&mut self, x: usize, y: usize) {
        self.min = (self.min.0.min(x), self.min.1.min(y));
        self.max = (self.max.0.max(x), self.max.1.max(y));
        self.sum = (self.sum.0 + x as u64, self.sum.1 + y as u64);
        self.area += 1;
    }

    fn stats(&self) -> ComponentStats {
        if self.area == 0 {
            return ComponentStats {
                left: -1,
                top: i32::MAX,
                width: 0,
                height: 0,
                area: 0,
                centroid: (f64::NAN, f64::NAN),
            };
        }
        let area = self.area as f64;
        ComponentStats {
            left: self.min.0 as i32,
            top: self.min.1 as i32,
            width: (self.max.0 - self.min.0 + 1) as i32,
            height: (self.max.1 - self.min.1 + 1) as i32,
            area: self.area as i32,
            centroid: (self.sum.0 as f64 / area, self.sum.1 as f64 / area),
        }
    }
}
