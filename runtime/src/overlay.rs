//! Detections drawn onto frames with embedded-graphics, and annotated frames saved as PNG.

use std::convert::Infallible;
use std::path::Path;

use embedded_graphics::mono_font::MonoTextStyleBuilder;
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use crate::detect::{Detection, Extras};
use crate::imgproc::Image;
use crate::track::ZoneConfig;

/// An RGB [`Image`] as an embedded-graphics draw target; pixels outside are clipped.
pub struct Canvas<'a>(pub &'a mut Image);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width as u32, self.0.height as u32)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        let (w, h) = (self.0.width as i32, self.0.height as i32);
        for Pixel(p, c) in pixels {
            if (0..w).contains(&p.x) && (0..h).contains(&p.y) {
                let i = (p.y * w + p.x) as usize * 3;
                self.0.data[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// A colour per class, spread around the hue circle so neighbouring ids differ.
pub fn class_colour(class_id: u16) -> Rgb888 {
    const PALETTE: [(u8, u8, u8); 8] = [
        (255, 56, 56),
        (255, 157, 151),
        (255, 112, 31),
        (72, 249, 10),
        (26, 147, 52),
        (0, 212, 187),
        (0, 194, 255),
        (132, 56, 255),
    ];
    let (r, g, b) = PALETTE[class_id as usize % PALETTE.len()];
    Rgb888::new(r, g, b)
}

/// Draws each detection's box, its caption (`caption(index)`: label, score, classifier
/// labels) and landmarks onto `rgb`.
pub fn draw_detections(
    rgb: &mut Image,
    detections: &[Detection],
    caption: impl Fn(usize) -> String,
) {
    let mut canvas = Canvas(rgb);
    let thickness = ((canvas.0.width.max(canvas.0.height) / 320) as u32).max(2);
    for (i, d) in detections.iter().enumerate() {
        let colour = class_colour(d.class_id);
        let top_left = Point::new(d.bbox.x1.round() as i32, d.bbox.y1.round() as i32);
        let size = Size::new(
            (d.bbox.x2 - d.bbox.x1).round().max(1.0) as u32,
            (d.bbox.y2 - d.bbox.y1).round().max(1.0) as u32,
        );
        let _ = Rectangle::new(top_left, size)
            .into_styled(PrimitiveStyle::with_stroke(colour, thickness))
            .draw(&mut canvas);
        let text = caption(i);
        let style = MonoTextStyleBuilder::new()
            .font(&FONT_6X10)
            .text_color(Rgb888::WHITE)
            .background_color(colour)
            .build();
        let y = (top_left.y - 11).max(0);
        let _ = Text::with_baseline(
            &text,
            Point::new(top_left.x.max(0), y),
            style,
            Baseline::Top,
        )
        .draw(&mut canvas);
        for p in d.landmarks.iter().flatten() {
            let _ = Circle::with_center(
                Point::new(p[0].round() as i32, p[1].round() as i32),
                thickness * 2 + 1,
            )
            .into_styled(PrimitiveStyle::with_fill(Rgb888::new(0, 255, 255)))
            .draw(&mut canvas);
        }
    }
}

/// How much of a mask's colour covers the pixels under it.
const MASK_ALPHA: u16 = 102; // of 256: 0.4

/// Keypoints scoring less are not drawn (Ultralytics' plotting threshold).
const KEYPOINT_MIN_SCORE: f32 = 0.25;

const COCO_KEYPOINTS: usize = 17;

/// COCO's person skeleton: pairs of keypoint indices (nose, eyes, ears, shoulders, elbows,
/// wrists, hips, knees, ankles), as Ultralytics draws it.
const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// Draws each detection's mask (its class colour blended in) and keypoints (joined by COCO's
/// skeleton when there are 17) onto `rgb`; call before [`draw_detections`] so boxes and
/// labels stay on top. Masks of another image size are skipped.
pub fn draw_extras(rgb: &mut Image, detections: &[Detection], extras: &Extras) {
    let (w, h) = (rgb.width, rgb.height);
    for (i, d) in detections.iter().enumerate() {
        let Some(mask) = extras.mask(i) else {
            continue;
        };
        if mask.size != [h as u32, w as u32] {
            continue;
        }
        let colour = class_colour(d.class_id);
        let colour = [colour.r(), colour.g(), colour.b()].map(u16::from);
        for run in mask.runs() {
            for at in run {
                let (x, y) = ((at / h as u64) as usize, (at % h as u64) as usize);
                let px = &mut rgb.data[(y * w + x) * 3..][..3];
                for (p, c) in px.iter_mut().zip(colour) {
                    *p = ((u16::from(*p) * (256 - MASK_ALPHA) + c * MASK_ALPHA) >> 8) as u8;
                }
            }
        }
    }
    let thickness = ((w.max(h) / 320) as u32).max(2);
    let mut canvas = Canvas(rgb);
    let at = |p: &[f32; 3]| Point::new(p[0].round() as i32, p[1].round() as i32);
    for i in 0..detections.len() {
        let points = extras.keypoints(i);
        if points.len() == COCO_KEYPOINTS {
            for &(a, b) in &COCO_SKELETON {
                let (pa, pb) = (&points[a], &points[b]);
                if pa[2] >= KEYPOINT_MIN_SCORE && pb[2] >= KEYPOINT_MIN_SCORE {
                    let _ = Line::new(at(pa), at(pb))
                        .into_styled(PrimitiveStyle::with_stroke(
                            Rgb888::new(51, 153, 255),
                            thickness,
                        ))
                        .draw(&mut canvas);
                }
            }
        }
        for p in points.iter().filter(|p| p[2] >= KEYPOINT_MIN_SCORE) {
            let _ = Circle::with_center(at(p), thickness * 2 + 1)
                .into_styled(PrimitiveStyle::with_fill(Rgb888::new(255, 128, 0)))
                .draw(&mut canvas);
        }
    }
}

/// Zone outlines and names, in yellow.
const ZONE_COLOUR: Rgb888 = Rgb888::new(255, 221, 0);

/// Draws each zone's outline and name, and `#id` inside the bottom-left corner of each
/// tracked detection's box (the label is above its top); call after [`draw_detections`].
pub fn draw_tracks(
    rgb: &mut Image,
    detections: &[Detection],
    extras: &Extras,
    zones: &[ZoneConfig],
) {
    let thickness = ((rgb.width.max(rgb.height) / 320) as u32).max(2);
    let mut canvas = Canvas(rgb);
    let at = |p: &[f32; 2]| Point::new(p[0].round() as i32, p[1].round() as i32);
    let text = |colour| {
        MonoTextStyleBuilder::new()
            .font(&FONT_6X10)
            .text_color(Rgb888::BLACK)
            .background_color(colour)
            .build()
    };
    for zone in zones {
        let corners = zone.polygon.iter().zip(zone.polygon.iter().cycle().skip(1));
        for (a, b) in corners {
            let _ = Line::new(at(a), at(b))
                .into_styled(PrimitiveStyle::with_stroke(ZONE_COLOUR, thickness))
                .draw(&mut canvas);
        }
        if let Some(first) = zone.polygon.first() {
            let _ = Text::with_baseline(&zone.name, at(first), text(ZONE_COLOUR), Baseline::Top)
                .draw(&mut canvas);
        }
    }
    for (i, d) in detections.iter().enumerate() {
        if let Some(id) = extras.track_id(i) {
            let corner = Point::new(d.bbox.x1.round() as i32, d.bbox.y2.round() as i32);
            let offset = Point::new(thickness as i32, -(thickness as i32) - 10);
            let _ = Text::with_baseline(
                &format!("#{id}"),
                corner + offset,
                text(class_colour(d.class_id)),
                Baseline::Top,
            )
            .draw(&mut canvas);
        }
    }
}

/// Writes an RGB image as PNG.
pub fn save_png(rgb: &Image, path: &Path) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, rgb.width as u32, rgb.height as u32);
    encoder.set_color(if rgb.channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&rgb.data)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    #[test]
    fn masks_are_blended_in_and_skeletons_joined() {
        let det = Detection {
            class_id: 0,
            score: 0.9,
            bbox: BBox {
                x1: 0.0,
                y1: 0.0,
                x2: 40.0,
                y2: 30.0,
            },
            landmarks: None,
        };
        let mut extras = Extras::new();
        extras.reset(40, 30);
        let mask = Image::from_vec(2, 2, 1, vec![255, 0, 0, 255]).unwrap();
        extras.push_mask(&mask, 3, 4);
        // A person lying along y = 20, every keypoint sure but the last.
        let points = (0..COCO_KEYPOINTS).map(|k| [2.0 + 2.0 * k as f32, 20.0, 0.9]);
        extras.push_keypoints(points.map(|[x, y, s]| [x, y, if x > 30.0 { 0.1 } else { s }]));
        let mut rgb = Image::new(40, 30, 3);
        rgb.data.fill(100);
        draw_extras(&mut rgb, &[det, det], &extras);
        let px = |x: usize, y: usize| &rgb.data[(y * 40 + x) * 3..][..3];
        // (100 * 154 + 255 * 102) >> 8 = 161 for the class colour's red.
        assert_eq!(px(3, 4)[0], 161);
        assert_eq!(px(4, 5)[0], 161);
        assert_eq!(px(4, 4), [100, 100, 100]);
        assert_eq!(px(3, 5), [100, 100, 100]);
        assert_ne!(px(12, 20), [100, 100, 100], "keypoints drawn");
        assert_eq!(px(38, 20), [100, 100, 100], "unsure keypoints are not");
        assert_eq!(px(20, 5), [100, 100, 100]);
    }
}
