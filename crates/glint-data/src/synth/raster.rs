//! A small anti-aliased rasteriser: polygon coverage and an RGB canvas to paint it on.
//!
//! Coverage is exact along x (each span's overlap with a pixel is measured) and supersampled
//! along y ([`SUB_ROWS`] scanlines per pixel row), so edges are smooth at any angle. Only the
//! pixels inside a polygon's bounds are visited, which keeps drawing cheap.

/// Scanlines per pixel row: vertical supersampling factor.
const SUB_ROWS: usize = 8;

/// A point `[x, y]` in pixels (y grows downwards).
pub(crate) type Point = [f32; 2];

/// The fraction of each pixel a polygon covers, over the polygon's bounds clipped to the image.
pub(crate) struct Coverage {
    /// Top-left pixel of the covered window.
    pub x0: usize,
    pub y0: usize,
    /// Window width in pixels (the height is `values.len() / width`).
    pub width: usize,
    /// Row-major coverage in `[0, 1]`.
    pub values: Vec<f32>,
}

impl Coverage {
    /// Iterates `(x, y, coverage)` over the pixels with non-zero coverage.
    pub fn pixels(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0.0)
            .map(|(i, c)| (self.x0 + i % self.width, self.y0 + i / self.width, *c))
    }

    /// Total covered area in pixels (inside the image).
    pub fn area(&self) -> f32 {
        self.values.iter().sum()
    }
}

/// Rasterises a simple polygon (even-odd rule) into an image of `width × height` pixels.
/// Returns `None` when the polygon lies outside the image.
pub(crate) fn polygon_coverage(polygon: &[Point], width: usize, height: usize) -> Option<Coverage> {
    let (min, max) = bounds(polygon)?;
    let x0 = (min[0].floor().max(0.0) as usize).min(width);
    let y0 = (min[1].floor().max(0.0) as usize).min(height);
    let x1 = (max[0].ceil().max(0.0) as usize).min(width);
    let y1 = (max[1].ceil().max(0.0) as usize).min(height);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let mut values = vec![0.0f32; w * h];
    let mut crossings: Vec<f32> = Vec::with_capacity(16);
    let weight = 1.0 / SUB_ROWS as f32;
    for row in 0..h {
        let row_values = &mut values[row * w..(row + 1) * w];
        for sub in 0..SUB_ROWS {
            let y = (y0 + row) as f32 + (sub as f32 + 0.5) * weight;
            crossings.clear();
            for (i, a) in polygon.iter().enumerate() {
                let b = polygon[(i + 1) % polygon.len()];
                // Half-open test so a vertex lying exactly on the scanline counts once.
                if (a[1] <= y) != (b[1] <= y) {
                    crossings.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
                }
            }
            crossings.sort_by(f32::total_cmp);
            for span in crossings.chunks_exact(2) {
                add_span(row_values, x0, span[0], span[1], weight);
            }
        }
    }
    for v in &mut values {
        *v = v.min(1.0);
    }
    Some(Coverage { x0, y0, width: w, values })
}

/// Adds `weight` × (overlap of `[xa, xb)` with each pixel) to a row whose first pixel is `x0`.
fn add_span(row: &mut [f32], x0: usize, xa: f32, xb: f32, weight: f32) {
    let lo = x0 as f32;
    let hi = (x0 + row.len()) as f32;
    let (xa, xb) = (xa.clamp(lo, hi), xb.clamp(lo, hi));
    if xb <= xa {
        return;
    }
    let first = xa.floor() as usize;
    let last = xb.floor() as usize;
    if first == last {
        if let Some(v) = row.get_mut(first - x0) {
            *v += (xb - xa) * weight;
        }
        return;
    }
    if let Some(v) = row.get_mut(first - x0) {
        *v += (first as f32 + 1.0 - xa) * weight;
    }
    for v in row.iter_mut().take(last - x0).skip(first + 1 - x0) {
        *v += weight;
    }
    if let Some(v) = row.get_mut(last - x0) {
        *v += (xb - last as f32) * weight;
    }
}

/// The axis-aligned bounds `(min, max)` of a polygon; `None` for an empty one.
pub(crate) fn bounds(polygon: &[Point]) -> Option<(Point, Point)> {
    let first = *polygon.first()?;
    Some(polygon.iter().fold((first, first), |(min, max), p| {
        ([min[0].min(p[0]), min[1].min(p[1])], [max[0].max(p[0]), max[1].max(p[1])])
    }))
}

/// The area of a simple polygon (shoelace formula).
pub(crate) fn polygon_area(polygon: &[Point]) -> f32 {
    let twice: f32 =
        polygon.iter().zip(polygon.iter().cycle().skip(1)).map(|(a, b)| a[0] * b[1] - b[0] * a[1]).sum();
    twice.abs() / 2.0
}

/// An RGB image with f32 channels in `[0, 255]`, painted on before quantising to 8 bits.
pub(crate) struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Row-major, 3 values per pixel.
    pub rgb: Vec<f32>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, rgb: vec![0.0; width * height * 3] }
    }

    /// Blends `colour_at(x, y)` over each covered pixel, weighted by its coverage.
    pub fn paint(&mut self, coverage: &Coverage, colour_at: impl Fn(usize, usize) -> [f32; 3]) {
        for (x, y, alpha) in coverage.pixels() {
            let colour = colour_at(x, y);
            let i = (y * self.width + x) * 3;
            for (dst, src) in self.rgb[i..i + 3].iter_mut().zip(colour) {
                *dst += (src - *dst) * alpha;
            }
        }
    }

    /// Quantises to 8-bit RGB after adding per-pixel noise of up to `±noise` levels; the noise
    /// comes from a hash of `noise_seed` and the pixel index, so it is reproducible.
    pub fn to_rgb8(&self, noise: f32, noise_seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rgb.len());
        for (i, px) in self.rgb.chunks_exact(3).enumerate() {
            let h = splitmix64(noise_seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // One shared luminance jitter plus a little per-channel jitter.
            let shared = unit(h) * noise;
            for (c, value) in px.iter().enumerate() {
                let own = unit(h >> (16 * (c + 1))) * noise * 0.35;
                // Round to nearest; `as` saturates, so 255.5 stays 255.
                out.push(((value + shared + own).clamp(0.0, 255.0) + 0.5) as u8);
            }
        }
        out
    }
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The low 16 bits of `h` as a value in `[-1, 1]`.
fn unit(h: u64) -> f32 {
    (h & 0xFFFF) as f32 / 32767.5 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_aligned_square_covers_exact_pixels() {
        // A square from (2.5, 1) to (5.5, 3): half pixels at x = 2 and 5, full ones between.
        let square = [[2.5, 1.0], [5.5, 1.0], [5.5, 3.0], [2.5, 3.0]];
        let c = polygon_coverage(&square, 10, 10).unwrap();
        assert_eq!((c.x0, c.y0, c.width, c.values.len()), (2, 1, 4, 8));
        for row in c.values.chunks(4) {
            assert_eq!(row, [0.5, 1.0, 1.0, 0.5]);
        }
        assert!((c.area() - 6.0).abs() < 1e-5);
    }

    #[test]
    fn coverage_area_matches_polygon_area() {
        // A rotated triangle well inside the image: total coverage equals its true area up to
        // the vertical supersampling error (a fraction of a pixel per edge row).
        let triangle = [[10.3, 5.7], [40.1, 12.2], [22.6, 38.9]];
        let c = polygon_coverage(&triangle, 64, 64).unwrap();
        let exact = polygon_area(&triangle);
        assert!((c.area() - exact).abs() / exact < 0.01, "{} vs {exact}", c.area());
        assert!(c.values.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn polygon_is_clipped_to_the_image() {
        let big = [[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]];
        let c = polygon_coverage(&big, 3, 4).unwrap();
        assert_eq!((c.x0, c.y0, c.width, c.values.len()), (0, 0, 3, 12));
        assert!((c.area() - 12.0).abs() < 1e-5);
        assert!(polygon_coverage(&[[20.0, 20.0], [30.0, 20.0], [25.0, 30.0]], 10, 10).is_none());
    }

    #[test]
    fn paint_blends_by_coverage() {
        let mut canvas = Canvas::new(4, 1);
        let half = [[0.0, 0.0], [1.5, 0.0], [1.5, 1.0], [0.0, 1.0]];
        let c = polygon_coverage(&half, 4, 1).unwrap();
        canvas.paint(&c, |_, _| [200.0, 100.0, 0.0]);
        assert_eq!(&canvas.rgb[..6], &[200.0, 100.0, 0.0, 100.0, 50.0, 0.0]);
        assert_eq!(canvas.to_rgb8(0.0, 1)[..6], [200, 100, 0, 100, 50, 0]);
    }
}
