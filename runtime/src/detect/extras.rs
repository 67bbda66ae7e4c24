//! Masks, keypoints and track ids beside a frame's detections, in fixed buffers reused from
//! frame to frame, so that [`Detection`](super::Detection) stays small and `Copy`.
//!
//! Entry `i` belongs to detection `i`. Masks are COCO run-length encodings over the whole
//! target image: column-major (down each column, then the next column to the right),
//! alternating runs of clear and set pixels, clear first. This is COCO's uncompressed RLE
//! (`pycocotools.mask.frPyObjects` reads it).

use std::ops::Range;

use super::decode::DecodeError;
use super::polygons::Tracer;
use super::{DecodeConfig, MAX_DETECTIONS};
use crate::imgproc::Image;
use crate::imgproc::bitmask::BitMask;
use crate::imgproc::geometry::Letterbox;
use crate::imgproc::morph::{Border, MorphOp, Morphology, Shape, StructuringElement};

/// Where masks and keypoints are drawn: the image the model input was fitted from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// How the image was fitted into the model input.
    pub letterbox: Letterbox,
    pub width: usize,
    pub height: usize,
}

impl Target {
    /// The model input itself: masks and keypoints in input pixels.
    pub fn identity(width: usize, height: usize) -> Self {
        Self {
            letterbox: Letterbox {
                scale_x: 1.0,
                scale_y: 1.0,
                left: 0,
                top: 0,
                width,
                height,
            },
            width,
            height,
        }
    }

    /// A point of the model input in target pixels, clipped to the image.
    pub fn point(&self, x: f32, y: f32) -> (f32, f32) {
        let (x, y) = self.letterbox.to_source(x, y);
        (
            x.clamp(0.0, self.width as f32),
            y.clamp(0.0, self.height as f32),
        )
    }

    /// Where the centres of target column `x` and row `y` fall in the model input.
    pub(crate) fn input_of(&self, x: usize, y: usize) -> (f32, f32) {
        let lb = &self.letterbox;
        (
            lb.left as f32 + (x as f32 + 0.5) * lb.scale_x,
            lb.top as f32 + (y as f32 + 0.5) * lb.scale_y,
        )
    }

    /// The whole pixels whose index lies in `[x1, x2) × [y1, y2)` (Ultralytics' `crop_mask`
    /// rule), clipped to the image: column range, row range.
    pub(crate) fn pixels_in(&self, b: &super::BBox) -> (Range<usize>, Range<usize>) {
        let span = |a: f32, b: f32, n: usize| {
            let lo = a.max(0.0).ceil() as usize;
            let hi = (b.max(0.0).ceil() as usize).min(n);
            lo.min(hi)..hi
        };
        (span(b.x1, b.x2, self.width), span(b.y1, b.y2, self.height))
    }
}

/// One detection's mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mask<'a> {
    /// Image height and width (COCO's `size`).
    pub size: [u32; 2],
    /// COCO run lengths, column-major, clear first.
    pub counts: &'a [u32],
    /// Set pixels.
    pub area: u32,
    /// Mean of the set pixels' centres, `[x, y]` in target pixels.
    pub centroid: [f32; 2],
}

impl Mask<'_> {
    /// The set pixels as ranges of column-major indices (`x * height + y`).
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut at = 0u64;
        self.counts.chunks(2).filter_map(move |pair| {
            at += u64::from(pair[0]);
            let start = at;
            at += u64::from(*pair.get(1)?);
            Some(start..at)
        })
    }

    /// Whether pixel `(x, y)` is set; linear in the number of runs.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        let i = (x * self.size[0] as usize + y) as u64;
        self.runs().any(|r| r.contains(&i))
    }
}

/// One detection's mask as polygons ([`polygons`](super::polygons)): the outer contour of
/// each part, vertices on pixel corners in target pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Polygons<'a> {
    points: &'a [[u32; 2]],
    /// Where each polygon ends in `points`; the first starts at `start`.
    ends: &'a [u32],
    start: u32,
}

impl<'a> Polygons<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a [[u32; 2]]> + 'a {
        let (points, mut start) = (self.points, self.start as usize);
        self.ends.iter().map(move |&e| {
            let p = &points[start..e as usize];
            start = e as usize;
            p
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    counts: [u32; 2],
    points: [u32; 2],
    /// Range of `polygon_ends`.
    polygons: [u32; 2],
    area: u32,
    centroid: [f32; 2],
    /// 0: not tracked.
    track_id: u32,
    /// Range of `classes`.
    classes: [u32; 2],
}

/// A second-stage classifier's label for a detection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classified {
    /// Which classifier, in config order.
    pub classifier: u8,
    /// The label's index in the stream's label table.
    pub label: u16,
    pub score: f32,
}

/// The masks, keypoints and track ids of a frame's detections.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    width: u32,
    height: u32,
    counts: Vec<u32>,
    points: Vec<[f32; 3]>,
    entries: heapless::Vec<Entry, MAX_DETECTIONS>,
    /// A column-major copy of the mask being encoded.
    columns: Vec<u8>,
    /// Traces each mask's polygons as it is encoded, when polygons are asked for.
    tracer: Option<Tracer>,
    polygon_points: Vec<[u32; 2]>,
    polygon_ends: Vec<u32>,
    classes: Vec<Classified>,
}

/// The first index from `i` whose byte is not `value` (0 or 255), or `s.len()`; eight bytes
/// at a time through the long runs of a mask.
fn skip(s: &[u8], mut i: usize, value: u8) -> usize {
    let word = u64::from_ne_bytes([value; 8]);
    while let Some(chunk) = s.get(i..i + 8) {
        if u64::from_ne_bytes(chunk.try_into().expect("eight bytes")) != word {
            break;
        }
        i += 8;
    }
    while i < s.len() && s[i] == value {
        i += 1;
    }
    i
}

impl Extras {
    pub fn new() -> Self {
        Self::default()
    }

    /// Extras whose masks also carry polygons simplified to `tolerance` pixels (0 keeps
    /// every corner).
    pub fn with_polygons(tolerance: f32) -> Self {
        Self {
            tracer: Some(Tracer::new(tolerance)),
            ..Self::default()
        }
    }

    /// Forgets the entries; masks from now on cover `width × height`.
    pub fn reset(&mut self, width: usize, height: usize) {
        self.width = width as u32;
        self.height = height as u32;
        self.counts.clear();
        self.points.clear();
        self.polygon_points.clear();
        self.polygon_ends.clear();
        self.classes.clear();
        self.entries.clear();
    }

    /// Number of entries (detections past it have neither mask nor keypoints).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Detection `i`'s mask, if it has one.
    pub fn mask(&self, i: usize) -> Option<Mask<'_>> {
        let e = self.entries.get(i)?;
        let [a, b] = e.counts;
        (b > a).then(|| Mask {
            size: [self.height, self.width],
            counts: &self.counts[a as usize..b as usize],
            area: e.area,
            centroid: e.centroid,
        })
    }

    /// Detection `i`'s mask as polygons, if it has a mask and polygons were asked for.
    pub fn polygons(&self, i: usize) -> Option<Polygons<'_>> {
        let [a, b] = self.entries.get(i)?.polygons.map(|v| v as usize);
        (b > a).then(|| Polygons {
            points: &self.polygon_points,
            ends: &self.polygon_ends[a..b],
            start: a.checked_sub(1).map_or(0, |p| self.polygon_ends[p]),
        })
    }

    /// Detection `i`'s keypoints `[x, y, score]` in target pixels; empty when it has none.
    pub fn keypoints(&self, i: usize) -> &[[f32; 3]] {
        self.entries.get(i).map_or(&[], |e| {
            &self.points[e.points[0] as usize..e.points[1] as usize]
        })
    }

    /// Appends entry `i` of `other` (an empty one when it has none), for a detection copied
    /// from `other`'s list; `other`'s masks must cover the same image.
    pub fn push_from(&mut self, other: &Extras, i: usize) {
        let entry = self.entry_with(other.mask(i).map_or(&[], |m| m.counts), other.keypoints(i));
        let first = self.polygon_ends.len() as u32;
        for polygon in other.polygons(i).iter().flat_map(Polygons::iter) {
            self.polygon_points.extend_from_slice(polygon);
            self.polygon_ends.push(self.polygon_points.len() as u32);
        }
        let e = other.entries.get(i).copied().unwrap_or_default();
        self.push(Entry {
            area: e.area,
            centroid: e.centroid,
            track_id: e.track_id,
            polygons: [first, self.polygon_ends.len() as u32],
            ..entry
        });
    }

    /// The id of the track detection `i` belongs to, once that track is confirmed.
    pub fn track_id(&self, i: usize) -> Option<u32> {
        self.entries
            .get(i)
            .and_then(|e| (e.track_id != 0).then_some(e.track_id))
    }

    /// The classifiers' labels of detection `i`, best first per classifier.
    pub fn classes(&self, i: usize) -> &[Classified] {
        self.entries.get(i).map_or(&[], |e| {
            &self.classes[e.classes[0] as usize..e.classes[1] as usize]
        })
    }

    /// Gives detection `i` the labels `labels` (each detection once per frame).
    pub fn set_classes(&mut self, i: usize, labels: impl Iterator<Item = Classified>) {
        let start = self.classes.len() as u32;
        self.classes.extend(labels);
        if self.fill_to(i) {
            self.entries[i].classes = [start, self.classes.len() as u32];
        }
    }

    /// Marks detection `i` as part of track `id` (non-zero); entries up to `i` are added
    /// empty when the detections before it have no extras.
    pub fn set_track_id(&mut self, i: usize, id: u32) {
        if self.fill_to(i) {
            self.entries[i].track_id = id;
        }
    }

    /// Adds empty entries up to `i`, for detections before it with no extras; false when
    /// there is no room.
    fn fill_to(&mut self, i: usize) -> bool {
        while self.entries.len() <= i {
            let (c, p) = (self.counts.len() as u32, self.points.len() as u32);
            if self
                .entries
                .push(Entry {
                    counts: [c, c],
                    points: [p, p],
                    ..Entry::default()
                })
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Appends an entry with keypoints and no mask.
    pub(crate) fn push_keypoints(&mut self, points: impl Iterator<Item = [f32; 3]>) {
        let start = self.points.len() as u32;
        self.points.extend(points);
        let end = self.points.len() as u32;
        let (c, p) = (self.counts.len() as u32, self.polygon_ends.len() as u32);
        self.push(Entry {
            counts: [c, c],
            points: [start, end],
            polygons: [p, p],
            ..Entry::default()
        });
    }

    /// Appends the mask of `mask`'s set (nonzero) pixels placed with its top-left pixel at
    /// `(left, top)` of the target; returns its area. An empty mask appends nothing.
    pub(crate) fn push_mask(&mut self, mask: &Image, left: usize, top: usize) -> u32 {
        let (w, h) = (mask.width, mask.height);
        // The runs go down the columns: a column-major copy (0 or 255), made tile by tile
        // so that both sides stay in cache, is then read in order.
        const TILE: usize = 32;
        self.columns.clear();
        self.columns.resize(w * h, 0);
        for ty in (0..h).step_by(TILE) {
            for tx in (0..w).step_by(TILE) {
                for y in ty..(ty + TILE).min(h) {
                    let row = &mask.data[y * w + tx..y * w + (tx + TILE).min(w)];
                    for (x, &v) in (tx..).zip(row) {
                        self.columns[x * h + y] = u8::from(v != 0) * 255;
                    }
                }
            }
        }
        let height = u64::from(self.height);
        let start = self.counts.len();
        let (mut area, mut sum_x, mut sum_y) = (0u64, 0u64, 0u64);
        // Where the last run of set pixels ended (column-major index); none yet.
        let mut end: Option<u64> = None;
        for (x, column) in self.columns.chunks_exact(h.max(1)).enumerate().take(w) {
            let base = (left + x) as u64 * height + top as u64;
            let mut y = 0;
            loop {
                y = skip(column, y, 0);
                if y == h {
                    break;
                }
                let e = skip(column, y, 255);
                let (a, n) = (base + y as u64, (e - y) as u64);
                match end {
                    Some(last) if last == a => {
                        *self.counts.last_mut().expect("a run was written") += n as u32
                    }
                    _ => self
                        .counts
                        .extend([(a - end.unwrap_or(0)) as u32, n as u32]),
                }
                end = Some(a + n);
                area += n;
                sum_x += x as u64 * n;
                sum_y += (y + e - 1) as u64 * n / 2;
                y = e;
            }
        }
        let Some(end) = end else {
            return 0;
        };
        let total = u64::from(self.width) * height;
        if total > end {
            self.counts.push((total - end) as u32);
        }
        let n = area as f64;
        let p = self.points.len() as u32;
        let first = self.polygon_ends.len() as u32;
        if let Some(tracer) = &mut self.tracer {
            tracer.trace(
                mask,
                (left, top),
                &mut self.polygon_points,
                &mut self.polygon_ends,
            );
        }
        self.push(Entry {
            counts: [start as u32, self.counts.len() as u32],
            points: [p, p],
            polygons: [first, self.polygon_ends.len() as u32],
            area: area as u32,
            centroid: [
                (left as f64 + sum_x as f64 / n + 0.5) as f32,
                (top as f64 + sum_y as f64 / n + 0.5) as f32,
            ],
            ..Entry::default()
        });
        area as u32
    }

    fn entry_with(&mut self, counts: &[u32], points: &[[f32; 3]]) -> Entry {
        let c = self.counts.len() as u32;
        self.counts.extend_from_slice(counts);
        let p = self.points.len() as u32;
        self.points.extend_from_slice(points);
        let e = self.polygon_ends.len() as u32;
        Entry {
            counts: [c, self.counts.len() as u32],
            points: [p, self.points.len() as u32],
            polygons: [e, e],
            ..Entry::default()
        }
    }

    fn push(&mut self, entry: Entry) {
        // The entries are as many as the detections, which are at most MAX_DETECTIONS.
        let _ = self.entries.push(entry);
    }
}

/// The opening then closing that `mask_open` and `mask_close` ask for (elliptical elements,
/// OpenCV's default border), in the order to apply them.
pub(crate) fn cleanup_ops(cfg: &DecodeConfig) -> Result<Vec<Morphology>, DecodeError> {
    let mut ops = Vec::new();
    for (op, side, field) in [
        (MorphOp::Open, cfg.mask_open, "mask_open"),
        (MorphOp::Close, cfg.mask_close, "mask_close"),
    ] {
        if side > MAX_ELEMENT {
            return Err(DecodeError::Config {
                field,
                reason: format!("{side} px is larger than {MAX_ELEMENT} px"),
            });
        }
        if side > 1 {
            let element = StructuringElement::new(Shape::Ellipse, side, side, None)
                .expect("a nonzero side is a valid element");
            ops.push(
                Morphology::new(op, &element, None, 1, Border::Neutral)
                    .expect("open and close with a centred anchor are valid"),
            );
        }
    }
    Ok(ops)
}

/// Largest `mask_open` / `mask_close`: masks are cleaned, not reshaped.
const MAX_ELEMENT: usize = 99;

/// Runs `ops` on `mask` in place, using `spare` as the other buffer.
pub(crate) fn apply_ops(ops: &mut [Morphology], mask: &mut Image, spare: &mut Image) {
    for op in ops {
        op.apply(mask, spare).expect("masks have one channel");
        std::mem::swap(mask, spare);
    }
}

/// Cleans binary masks (0/255) before they are encoded: the configured opening and closing
/// (on bit-packed masks, 64 pixels a word), then removal of the 8-connected parts smaller
/// than `mask_min_area`. Its buffers are kept.
pub(crate) struct MaskCleaner {
    ops: Vec<Morphology>,
    min_area: u32,
    /// Pixels around a box the morphology may reach.
    margin: usize,
    bits: BitMask,
    spare: BitMask,
    parts: Parts,
}

impl MaskCleaner {
    pub fn new(cfg: &DecodeConfig) -> Result<Self, DecodeError> {
        Ok(Self {
            ops: cleanup_ops(cfg)?,
            min_area: cfg.mask_min_area,
            margin: cfg.mask_open + cfg.mask_close,
            bits: BitMask::default(),
            spare: BitMask::default(),
            parts: Parts::default(),
        })
    }

    /// How far around a mask's box cleaning may change pixels: a mask buffer this much larger
    /// (within the image) is cleaned as the whole image would be.
    pub fn margin(&self) -> usize {
        self.margin
    }

    pub fn clean(&mut self, mask: &mut Image) {
        if !self.ops.is_empty() {
            self.bits.load(mask).expect("masks have one channel");
            for op in &mut self.ops {
                op.apply_mask(&self.bits, &mut self.spare);
                std::mem::swap(&mut self.bits, &mut self.spare);
            }
            self.bits.store(mask);
        }
        if self.min_area > 1 {
            self.remove_small_parts(mask);
        }
    }

    /// Clears the 8-connected parts with fewer than `min_area` pixels.
    fn remove_small_parts(&mut self, mask: &mut Image) {
        let w = mask.width;
        let parts = &mut self.parts;
        parts.label(mask);
        for k in 0..parts.runs.len() {
            let [y, x0, x1] = parts.runs[k];
            let root = parts.find(k);
            if parts.area[root] < self.min_area {
                let at = y as usize * w;
                mask.data[at + x0 as usize..at + x1 as usize].fill(0);
            }
        }
    }
}

/// The 8-connected parts of a mask (nonzero pixels): union-find over its row runs, which are
/// few next to its pixels. A part's root is its first run in raster order. Its buffers are
/// kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parts {
    /// The set runs `[y, x0, x1)`, row by row.
    pub runs: Vec<[u32; 3]>,
    parent: Vec<u32>,
    /// By root run: the part's pixels.
    pub area: Vec<u32>,
}

impl Parts {
    pub fn label(&mut self, mask: &Image) {
        let w = mask.width;
        let (runs, parent) = (&mut self.runs, &mut self.parent);
        runs.clear();
        parent.clear();
        let mut above = 0..0;
        for (y, row) in mask.data.chunks_exact(w.max(1)).enumerate() {
            let first = runs.len();
            let mut x = 0;
            loop {
                x = skip(row, x, 0);
                if x == w {
                    break;
                }
                // A byte that is neither 0 nor 255 still makes a run.
                let end = skip(row, x, 255).max(x + 1);
                parent.push(runs.len() as u32);
                runs.push([y as u32, x as u32, end as u32]);
                x = end;
            }
            // Runs touch when they overlap or meet at a corner; both rows are in order.
            let (mut i, mut j) = (above.start, first);
            while i < above.end && j < runs.len() {
                let ([_, a0, a1], [_, b0, b1]) = (runs[i], runs[j]);
                if a0 <= b1 && b0 <= a1 {
                    let (ra, rb) = (find(parent, i as u32), find(parent, j as u32));
                    // The smaller index stays the root: roots are first in raster order.
                    parent[ra.max(rb) as usize] = ra.min(rb);
                }
                if a1 < b1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
            above = first..runs.len();
        }
        self.area.clear();
        self.area.resize(runs.len(), 0);
        for (k, &[_, x0, x1]) in runs.iter().enumerate() {
            self.area[find(parent, k as u32) as usize] += x1 - x0;
        }
    }

    /// The root run of run `k`'s part.
    pub fn find(&mut self, k: usize) -> usize {
        find(&mut self.parent, k as u32) as usize
    }
}

/// The root of `i`, halving the path on the way.
fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let up = parent[parent[i as usize] as usize];
        parent[i as usize] = up;
        i = up;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Encoding then decoding a mask placed anywhere in the image gives back its pixels,
        /// its area and centroid.
        #[test]
        fn rle_round_trips(
            (w, h, bits) in (1usize..20, 1usize..20).prop_flat_map(|(w, h)| {
                (Just(w), Just(h), prop::collection::vec(prop::bool::weighted(0.8), w * h))
            }),
            left in 0usize..4,
            top in 0usize..4,
        ) {
            let (iw, ih) = (w + left + 2, h + top + 1);
            let mask = Image::from_vec(w, h, 1, bits.iter().map(|&b| u8::from(b) * 255).collect()).unwrap();
            let mut extras = Extras::new();
            extras.reset(iw, ih);
            let area = extras.push_mask(&mask, left, top);
            prop_assert_eq!(area as usize, bits.iter().filter(|&&b| b).count());
            if area == 0 {
                prop_assert!(extras.is_empty());
                return Ok(());
            }
            let m = extras.mask(0).unwrap();
            prop_assert_eq!(m.counts.iter().map(|&c| u64::from(c)).sum::<u64>(), (iw * ih) as u64);
            prop_assert!(m.counts[1..].iter().all(|&c| c > 0), "{:?}", m.counts);
            let (mut sx, mut sy) = (0.0, 0.0);
            for x in 0..iw {
                for y in 0..ih {
                    let inside = (left..left + w).contains(&x) && (top..top + h).contains(&y);
                    let set = inside && bits[(y - top) * w + x - left];
                    prop_assert_eq!(m.contains(x, y), set, "({}, {})", x, y);
                    if set {
                        sx += x as f32 + 0.5;
                        sy += y as f32 + 0.5;
                    }
                }
            }
            let n = area as f32;
            prop_assert!((m.centroid[0] - sx / n).abs() < 1e-4 && (m.centroid[1] - sy / n).abs() < 1e-4);
        }
    }

    proptest! {
        /// Small parts go, as connected components with statistics say they should.
        #[test]
        fn min_area_matches_connected_components(
            (w, h, bits) in (1usize..24, 1usize..24).prop_flat_map(|(w, h)| {
                (Just(w), Just(h), prop::collection::vec(prop::bool::weighted(0.45), w * h))
            }),
            min_area in 2u32..12,
        ) {
            use crate::imgproc::regions::{Connectivity, connected_components};
            let mask = Image::from_vec(w, h, 1, bits.iter().map(|&b| u8::from(b) * 255).collect()).unwrap();
            let (mut labels, mut stats) = (Image::new(0, 0, 1), Vec::new());
            connected_components(&mask, &mut labels, &mut stats, Connectivity::Eight).unwrap();
            let want: Vec<u8> = labels.data.iter().map(|&l| {
                u8::from(l != 0 && stats[l as usize].area as u32 >= min_area) * 255
            }).collect();
            let cfg = DecodeConfig { mask_min_area: min_area, ..DecodeConfig::default() };
            let mut cleaned = mask.clone();
            MaskCleaner::new(&cfg).unwrap().clean(&mut cleaned);
            prop_assert_eq!(cleaned.data, want);
        }
    }

    #[test]
    fn min_area_removes_small_parts_only() {
        let cfg = DecodeConfig {
            mask_min_area: 3,
            ..DecodeConfig::default()
        };
        let mut cleaner = MaskCleaner::new(&cfg).unwrap();
        #[rustfmt::skip]
        let data = vec![
            255, 255, 0, 0, 255,
            255, 0,   0, 0, 0,
            0,   0,   0, 255, 255,
        ];
        let mut mask = Image::from_vec(5, 3, 1, data).unwrap();
        cleaner.clean(&mut mask);
        assert_eq!(
            mask.data,
            [255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
