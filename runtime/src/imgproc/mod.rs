//! OpenCV-compatible image processing, implemented natively.
//!
//! Images are row-major, channels interleaved, rows packed (`stride == width * channels`).

pub mod color;
pub mod edges;
pub mod filter;
pub mod geometry;

/// An owned image of `T` samples with `channels` interleaved channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<T = u8> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<T>,
}

impl<T: Copy + Default> Image<T> {
    /// A zero-filled image.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![T::default(); width * height * channels],
        }
    }

    /// Wraps `data`; `None` when its length is not `width * height * channels`.
    pub fn from_vec(width: usize, height: usize, channels: usize, data: Vec<T>) -> Option<Self> {
        (data.len() == width * height * channels).then_some(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// Resizes in place, reusing the allocation when it is large enough.
    pub fn reshape(&mut self, width: usize, height: usize, channels: usize) {
        self.width = width;
        self.height = height;
        self.channels = channels;
        self.data.resize(width * height * channels, T::default());
    }

    pub fn row(&self, y: usize) -> &[T] {
        let w = self.width * self.channels;
        &self.data[y * w..(y + 1) * w]
    }

    pub fn row_mut(&mut self, y: usize) -> &mut [T] {
        let w = self.width * self.channels;
        &mut self.data[y * w..(y + 1) * w]
    }
}

pub mod bitmask;
pub mod morph;
pub mod motion;
pub mod regions;
pub mod threshold;
