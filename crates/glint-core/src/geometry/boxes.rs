//! Box formats. Coordinates are pixels or, when divided by the image size, normalised to
//! [0, 1]; the format types do not care which, the conversions say which they produce.

use serde::{Deserialize, Serialize};

/// A box as its corners `[x0, y0, x1, y1]` (x0 ≤ x1, y0 ≤ y1 for a valid box).
/// Serialised as a 4-element array.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct BoxXyxy {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// A box as its centre and size `[cx, cy, w, h]`, the format detector heads predict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct BoxCxcywh {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

impl BoxXyxy {
    pub const fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self { x0, y0, x1, y1 }
    }

    /// From COCO's `[x, y, width, height]`.
    pub fn from_xywh([x, y, w, h]: [f32; 4]) -> Self {
        Self::new(x, y, x + w, y + h)
    }

    /// To COCO's `[x, y, width, height]`.
    pub fn to_xywh(self) -> [f32; 4] {
        [self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0]
    }

    pub fn to_cxcywh(self) -> BoxCxcywh {
        BoxCxcywh {
            cx: (self.x0 + self.x1) / 2.0,
            cy: (self.y0 + self.y1) / 2.0,
            w: self.x1 - self.x0,
            h: self.y1 - self.y0,
        }
    }

    pub fn width(self) -> f32 {
        self.x1 - self.x0
    }

    pub fn height(self) -> f32 {
        self.y1 - self.y0
    }

    /// Area; zero for an empty or inverted box (never negative).
    pub fn area(self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// True when the box has positive width and height.
    pub fn is_valid(self) -> bool {
        self.x1 > self.x0 && self.y1 > self.y0
    }

    /// Clamps the corners into `[0, width] × [0, height]`.
    pub fn clip(self, width: f32, height: f32) -> Self {
        Self::new(
            self.x0.clamp(0.0, width),
            self.y0.clamp(0.0, height),
            self.x1.clamp(0.0, width),
            self.y1.clamp(0.0, height),
        )
    }

    /// Multiplies x by `sx` and y by `sy` (pixel → normalised with `1/w, 1/h`, and back).
    pub fn scale(self, sx: f32, sy: f32) -> Self {
        Self::new(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)
    }

    /// Pixel box → box normalised by the image size.
    pub fn normalize(self, width: f32, height: f32) -> Self {
        self.scale(1.0 / width, 1.0 / height)
    }

    /// Normalised box → pixel box for an image of this size.
    pub fn denormalize(self, width: f32, height: f32) -> Self {
        self.scale(width, height)
    }

    /// The box mirrored left–right inside an image of this width.
    pub fn flip_horizontal(self, width: f32) -> Self {
        Self::new(width - self.x1, self.y0, width - self.x0, self.y1)
    }

    pub fn to_array(self) -> [f32; 4] {
        self.into()
    }
}

impl BoxCxcywh {
    pub const fn new(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self { cx, cy, w, h }
    }

    pub fn to_xyxy(self) -> BoxXyxy {
        BoxXyxy::new(
            self.cx - 0.5 * self.w,
            self.cy - 0.5 * self.h,
            self.cx + 0.5 * self.w,
            self.cy + 0.5 * self.h,
        )
    }

    pub fn scale(self, sx: f32, sy: f32) -> Self {
        Self::new(self.cx * sx, self.cy * sy, self.w * sx, self.h * sy)
    }

    pub fn to_array(self) -> [f32; 4] {
        self.into()
    }
}

impl From<[f32; 4]> for BoxXyxy {
    fn from([x0, y0, x1, y1]: [f32; 4]) -> Self {
        Self::new(x0, y0, x1, y1)
    }
}

impl From<BoxXyxy> for [f32; 4] {
    fn from(b: BoxXyxy) -> Self {
        [b.x0, b.y0, b.x1, b.y1]
    }
}

impl From<[f32; 4]> for BoxCxcywh {
    fn from([cx, cy, w, h]: [f32; 4]) -> Self {
        Self::new(cx, cy, w, h)
    }
}

impl From<BoxCxcywh> for [f32; 4] {
    fn from(b: BoxCxcywh) -> Self {
        [b.cx, b.cy, b.w, b.h]
    }
}

impl From<BoxCxcywh> for BoxXyxy {
    fn from(b: BoxCxcywh) -> Self {
        b.to_xyxy()
    }
}

impl From<BoxXyxy> for BoxCxcywh {
    fn from(b: BoxXyxy) -> Self {
        b.to_cxcywh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xyxy_cxcywh_round_trip() {
        let b = BoxXyxy::new(10.0, 20.0, 50.0, 100.0);
        let c = b.to_cxcywh();
        assert_eq!(c, BoxCxcywh::new(30.0, 60.0, 40.0, 80.0));
        assert_eq!(c.to_xyxy(), b);
    }

    #[test]
    fn xywh_round_trip_and_area() {
        let b = BoxXyxy::from_xywh([5.0, 6.0, 10.0, 4.0]);
        assert_eq!(b, BoxXyxy::new(5.0, 6.0, 15.0, 10.0));
        assert_eq!(b.to_xywh(), [5.0, 6.0, 10.0, 4.0]);
        assert_eq!(b.area(), 40.0);
        assert_eq!(BoxXyxy::new(5.0, 5.0, 1.0, 9.0).area(), 0.0);
    }

    #[test]
    fn normalise_clip_flip() {
        let b = BoxXyxy::new(-10.0, 20.0, 250.0, 100.0);
        assert_eq!(b.clip(200.0, 100.0), BoxXyxy::new(0.0, 20.0, 200.0, 100.0));
        let n = BoxXyxy::new(50.0, 25.0, 100.0, 50.0).normalize(200.0, 100.0);
        assert_eq!(n, BoxXyxy::new(0.25, 0.25, 0.5, 0.5));
        assert_eq!(n.denormalize(200.0, 100.0), BoxXyxy::new(50.0, 25.0, 100.0, 50.0));
        assert_eq!(
            BoxXyxy::new(10.0, 0.0, 30.0, 5.0).flip_horizontal(100.0),
            BoxXyxy::new(70.0, 0.0, 90.0, 5.0)
        );
    }

    #[test]
    fn serialises_as_array() {
        let b = BoxXyxy::new(1.0, 2.0, 3.0, 4.5);
        assert_eq!(serde_json::to_string(&b).unwrap(), "[1.0,2.0,3.0,4.5]");
        let back: BoxXyxy = serde_json::from_str("[1,2,3,4.5]").unwrap();
        assert_eq!(back, b);
    }
}
