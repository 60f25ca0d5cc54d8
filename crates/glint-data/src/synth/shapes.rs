//! The vocabulary of the synthetic world: shapes (the categories), colours and sizes (the
//! attributes captions mention), and each shape's outline.

use std::f32::consts::{PI, TAU};

use super::raster::Point;

/// A shape category. Every shape is drawn as a polygon (curves are finely sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Hexagon,
    Cross,
    Heart,
    Pentagon,
    Diamond,
    Crescent,
}

impl Shape {
    /// Every shape, in category-id order (category id = position + 1).
    pub const ALL: [Shape; 10] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Hexagon,
        Shape::Cross,
        Shape::Heart,
        Shape::Pentagon,
        Shape::Diamond,
        Shape::Crescent,
    ];

    /// The default novel (few-shot) shapes: each has a base look-alike (hexagon, square,
    /// circle), so a detector must learn the difference from a few examples.
    pub const DEFAULT_NOVEL: [Shape; 3] = [Shape::Pentagon, Shape::Diamond, Shape::Crescent];

    /// The category name, as it appears in captions and in COCO `categories`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Hexagon => "hexagon",
            Shape::Cross => "cross",
            Shape::Heart => "heart",
            Shape::Pentagon => "pentagon",
            Shape::Diamond => "diamond",
            Shape::Crescent => "crescent",
        }
    }

    /// The shape with this category name.
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The COCO category id (1-based, in [`Shape::ALL`] order).
    pub fn category_id(self) -> u64 {
        Shape::ALL.iter().position(|s| *s == self).map_or(0, |i| i as u64 + 1)
    }

    /// The largest rotation (radians, either way) that keeps the shape recognisable under its
    /// name: a heart or a diamond stands upright, a cross stays a "+" rather than an "x".
    pub(crate) fn max_rotation(self) -> f32 {
        match self {
            Shape::Heart | Shape::Diamond | Shape::Cross => PI / 7.0,
            _ => PI,
        }
    }

    /// The outline at unit scale, centred near the origin, about 2 units across.
    pub(crate) fn outline(self) -> Vec<Point> {
        match self {
            Shape::Circle => regular_polygon(96, 0.0),
            Shape::Square => vec![[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
            Shape::Triangle => regular_polygon(3, -PI / 2.0),
            Shape::Star => (0..10)
                .map(|i| {
                    let radius = if i % 2 == 0 { 1.0 } else { 0.45 };
                    polar(radius, -PI / 2.0 + i as f32 * PI / 5.0)
                })
                .collect(),
            Shape::Hexagon => regular_polygon(6, 0.0),
            Shape::Pentagon => regular_polygon(5, -PI / 2.0),
            Shape::Cross => {
                let (a, b) = (0.34, 1.0);
                vec![
                    [-a, -b],
                    [a, -b],
                    [a, -a],
                    [b, -a],
                    [b, a],
                    [a, a],
                    [a, b],
                    [-a, b],
                    [-a, a],
                    [-b, a],
                    [-b, -a],
                    [-a, -a],
                ]
            }
            Shape::Heart => (0..96)
                .map(|i| {
                    // The classic heart curve, y flipped so the point is at the bottom.
                    let t = i as f32 * TAU / 96.0;
                    let x = 16.0 * t.sin().powi(3);
                    let y =
                        -(13.0 * t.cos() - 5.0 * (2.0 * t).cos() - 2.0 * (3.0 * t).cos() - (4.0 * t).cos());
                    [x / 16.0, (y - 2.5) / 16.0]
                })
                .collect(),
            Shape::Diamond => vec![[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]],
            Shape::Crescent => crescent(),
        }
    }
}

/// A crescent: the unit disc minus a disc of radius 0.82 centred at (0.42, 0). The two circles
/// meet at (0.6, ±0.8); the outline runs along the outer arc, then back along the inner one.
fn crescent() -> Vec<Point> {
    const STEPS: usize = 64;
    let (inner_radius, inner_centre) = (0.82f32, 0.42f32);
    let outer_start = 0.8f32.atan2(0.6);
    let inner_start = 0.8f32.atan2(0.6 - inner_centre);
    let outer =
        (0..=STEPS).map(|k| polar(1.0, outer_start + (TAU - 2.0 * outer_start) * k as f32 / STEPS as f32));
    let inner = (1..STEPS).map(|k| {
        let angle = (TAU - inner_start) - (TAU - 2.0 * inner_start) * k as f32 / STEPS as f32;
        let [x, y] = polar(inner_radius, angle);
        [x + inner_centre, y]
    });
    outer.chain(inner).collect()
}

fn regular_polygon(sides: usize, start_angle: f32) -> Vec<Point> {
    (0..sides).map(|i| polar(1.0, start_angle + i as f32 * TAU / sides as f32)).collect()
}

fn polar(radius: f32, angle: f32) -> Point {
    [radius * angle.cos(), radius * angle.sin()]
}

/// A colour attribute: the name captions use and the nominal RGB it is drawn with (each object
/// jitters it slightly and shades it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
    Pink,
}

impl Colour {
    pub const ALL: [Colour; 7] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
        }
    }

    pub fn from_name(name: &str) -> Option<Colour> {
        Colour::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The nominal colour, saturated enough to stand out from the muted backgrounds.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 35, 40],
            Colour::Orange => [245, 135, 25],
            Colour::Yellow => [240, 215, 30],
            Colour::Green => [35, 165, 65],
            Colour::Blue => [35, 75, 215],
            Colour::Purple => [135, 55, 185],
            Colour::Pink => [235, 85, 170],
        }
    }
}

/// Unlabelled clutter colours: greys and browns, far from every [`Colour`].
pub(crate) const DISTRACTOR_RGB: [[u8; 3]; 6] =
    [[70, 70, 70], [150, 150, 150], [215, 215, 210], [120, 80, 50], [90, 60, 40], [160, 130, 100]];

/// COCO's object-size buckets, by area in pixels: small < 32², medium < 96², large otherwise.
/// The word in a caption is the bucket of the object's annotated area, so captions and
/// COCO's APs / APm / APl agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }

    pub fn from_name(name: &str) -> Option<SizeClass> {
        SizeClass::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The COCO bucket of an area in pixels.
    pub fn from_area(area: f64) -> SizeClass {
        if area < 32.0 * 32.0 {
            SizeClass::Small
        } else if area < 96.0 * 96.0 {
            SizeClass::Medium
        } else {
            SizeClass::Large
        }
    }

    /// The areas drawn for this class. The ranges stay clear of the bucket edges (1024 and
    /// 9216) so that "small", "medium" and "large" objects look different, not just differ by
    /// a pixel.
    pub(crate) fn area_range(self) -> (f32, f32) {
        match self {
            SizeClass::Small => (150.0, 800.0),
            SizeClass::Medium => (1300.0, 7000.0),
            SizeClass::Large => (11_000.0, f32::INFINITY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::raster::polygon_area;
    use super::*;

    #[test]
    fn names_round_trip_and_ids_are_one_based() {
        for (i, shape) in Shape::ALL.into_iter().enumerate() {
            assert_eq!(Shape::from_name(shape.name()), Some(shape));
            assert_eq!(shape.category_id(), i as u64 + 1);
        }
        for colour in Colour::ALL {
            assert_eq!(Colour::from_name(colour.name()), Some(colour));
        }
    }

    #[test]
    fn outlines_are_simple_polygons_of_sensible_area() {
        // Area relative to the 2×2 square the outline fits in: a shape that collapsed or
        // self-intersected (the shoelace sum cancels) would fall outside this range.
        for shape in Shape::ALL {
            let outline = shape.outline();
            let area = polygon_area(&outline);
            assert!((0.7..=4.0).contains(&area), "{shape:?}: area {area}");
            for p in &outline {
                assert!(p[0].abs() <= 1.001 && p[1].abs() <= 1.001, "{shape:?}: {p:?}");
            }
        }
        let circle = polygon_area(&Shape::Circle.outline());
        assert!((circle - PI).abs() < 0.01);
    }

    #[test]
    fn category_colours_are_far_from_distractors() {
        let dist = |a: [u8; 3], b: [u8; 3]| {
            a.iter().zip(b).map(|(x, y)| (*x as f32 - y as f32).powi(2)).sum::<f32>().sqrt()
        };
        for colour in Colour::ALL {
            for clutter in DISTRACTOR_RGB {
                assert!(dist(colour.rgb(), clutter) > 90.0, "{colour:?} vs {clutter:?}");
            }
        }
    }

    #[test]
    fn size_buckets_follow_coco() {
        assert_eq!(SizeClass::from_area(1023.9), SizeClass::Small);
        assert_eq!(SizeClass::from_area(1024.0), SizeClass::Medium);
        assert_eq!(SizeClass::from_area(9216.0), SizeClass::Large);
        for class in SizeClass::ALL {
            let (lo, hi) = class.area_range();
            assert_eq!(SizeClass::from_area(lo as f64), class);
            if hi.is_finite() {
                assert_eq!(SizeClass::from_area(hi as f64), class);
            }
        }
    }
}
