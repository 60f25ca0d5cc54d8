//! Captions: one phrase per object, joined the GLIP way
//! ("a small red circle . the large blue star on the left . the large blue star on the right .").
//!
//! An object whose attributes (size, colour, shape) no other object of the image shares is
//! named by them: "a small red circle". Objects that share their attributes with another get a
//! **referring phrase** that is true of exactly one of them. The grammar:
//!
//! ```text
//! phrase      := "a " attrs                                   (the only object with attrs)
//!              | "the " attrs " " position                    (an end or corner of its group)
//!              | "the " ordinal " " attrs " from the " side   (k-th of its group)
//!              | "the " attrs " " relation " the " attrs      (beside a unique landmark)
//!              | "the " extreme " " colour " " shape          (largest / smallest of its kind)
//! attrs       := size " " colour " " shape
//! position    := "on the left" | "on the right" | "at the top" | "at the bottom"
//!              | "at the top left" | "at the top right" | "at the bottom left" | "at the bottom right"
//! side        := "left" | "right" | "top" | "bottom"
//! ordinal     := "second" | "third" | ... | "tenth"
//! relation    := "left of" | "right of" | "above" | "below"
//! extreme     := "largest" | "smallest"
//! ```
//!
//! Everything is measured on the annotated boxes and areas. Along an axis, object `a` is
//! **clearly before** `b` (left of it, or above it) when `b`'s box centre is past `a`'s by at
//! least a quarter of their summed box widths (heights): their boxes overlap by at most half
//! their mean size along that axis. A phrase is used only when it is true and singles its
//! object out:
//!
//! - side / ordinal: every other object of the group is clearly before or clearly after it
//!   along the axis, and k − 1 of them are before it ("on the left" is the first from the
//!   left; the nearer end is named).
//! - corner ("at the top left"): no other object of the group is clearly left of it or
//!   clearly above it, and each is clearly right of it or clearly below it.
//! - relation: it is clearly before (after) the landmark, an object whose attributes are unique
//!   in the image, mostly in that direction (the centres are at least as far apart along that
//!   axis as along the other: "above" is not far to the side), and no other object of its group
//!   has its centre before (after) the landmark's at all.
//! - extreme: its area is at least [`EXTREME_RATIO`] times that of every other object of the
//!   same colour and shape (or at most 1 / [`EXTREME_RATIO`] times).
//!
//! Left / right come first, then top / bottom, corners and ordinals; a relation or an extreme
//! is used instead with probability [`VARIETY`] when one applies. A horizontal flip that swaps
//! the words "left" and "right" keeps every phrase true. Objects nothing singles out (in a
//! tight cluster of three or more identical objects, rare) share the phrase "a " attrs.

use std::ops::Range;

use glint_core::prompt::Prompt;
use rand::Rng;

use super::AnnotatedObject;

/// How much larger (in area) "the largest ..." is than every other object of its kind.
pub(crate) const EXTREME_RATIO: f32 = 1.25;
/// Probability of a relation or an extreme instead of a position, when one applies.
pub(crate) const VARIETY: f64 = 1.0 / 3.0;

/// Ordinals for the 2nd to 10th object from one end of a group.
const ORDINALS: [&str; 9] =
    ["second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"];

/// A caption and where each object's phrase sits in it.
#[derive(Debug, PartialEq)]
pub(crate) struct Grounding {
    pub caption: String,
    /// The distinct phrases, in caption order.
    pub phrases: Vec<String>,
    /// Each phrase's character span in the caption.
    pub spans: Vec<Range<usize>>,
    /// For each object, the index of its phrase in `phrases`.
    pub object_phrase: Vec<usize>,
}

/// The size, colour and shape words of an object: "small red circle".
fn attributes(object: &AnnotatedObject) -> String {
    format!("{} {} {}", object.size.name(), object.colour.name(), object.shape.name())
}

fn same_attributes(a: &AnnotatedObject, b: &AnnotatedObject) -> bool {
    (a.size, a.colour, a.shape) == (b.size, b.colour, b.shape)
}

/// An image axis; centres grow to the right (x) and downwards (y).
#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

impl Axis {
    /// Box centre and extent along the axis.
    fn centre_and_extent(self, object: &AnnotatedObject) -> (f32, f32) {
        let b = object.bbox;
        match self {
            Axis::X => ((b.x0 + b.x1) / 2.0, b.x1 - b.x0),
            Axis::Y => ((b.y0 + b.y1) / 2.0, b.y1 - b.y0),
        }
    }

    /// Whether `a` is clearly before (left of / above) `b`.
    fn clearly_before(self, a: &AnnotatedObject, b: &AnnotatedObject) -> bool {
        let ((ca, ea), (cb, eb)) = (self.centre_and_extent(a), self.centre_and_extent(b));
        cb - ca >= (ea + eb) / 4.0
    }

    /// The names of the two ends: (start, end).
    fn sides(self) -> (&'static str, &'static str) {
        match self {
            Axis::X => ("left", "right"),
            Axis::Y => ("top", "bottom"),
        }
    }
}

/// One phrase per object, in object order. Uses `rng` only where a group of identical objects
/// offers a choice.
pub(crate) fn describe(objects: &[AnnotatedObject], rng: &mut impl Rng) -> Vec<String> {
    // The other objects with the attributes of object `i`.
    let twins_of = |i: usize, target: &AnnotatedObject| -> Vec<&AnnotatedObject> {
        objects
            .iter()
            .enumerate()
            .filter(|&(j, o)| j != i && same_attributes(target, o))
            .map(|(_, o)| o)
            .collect()
    };
    let landmarks: Vec<&AnnotatedObject> =
        objects.iter().enumerate().filter(|&(i, o)| twins_of(i, o).is_empty()).map(|(_, o)| o).collect();
    objects
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let twins = twins_of(i, target);
            let plain = || format!("a {}", attributes(target));
            if twins.is_empty() {
                return plain();
            }
            let kind: Vec<&AnnotatedObject> = objects
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && (o.colour, o.shape) == (target.colour, target.shape))
                .map(|(_, o)| o)
                .collect();
            refer(target, &twins, &kind, &landmarks, rng).unwrap_or_else(plain)
        })
        .collect()
}

/// A referring phrase for `target` among its `twins` (the other objects with its attributes),
/// or `None` when nothing singles it out. `kind`: the other objects of its colour and shape.
fn refer(
    target: &AnnotatedObject,
    twins: &[&AnnotatedObject],
    kind: &[&AnnotatedObject],
    landmarks: &[&AnnotatedObject],
    rng: &mut impl Rng,
) -> Option<String> {
    // A side ("on the left", x first), then a corner, then the lowest ordinal (x first).
    let ranked: Vec<(usize, String)> =
        [Axis::X, Axis::Y].into_iter().filter_map(|axis| rank_phrase(target, twins, axis)).collect();
    let side = ranked.iter().find(|(rank, _)| *rank == 0).map(|(_, phrase)| phrase.clone());
    let position = side
        .or_else(|| corner_phrase(target, twins))
        .or_else(|| ranked.into_iter().min_by_key(|(rank, _)| *rank).map(|(_, phrase)| phrase));
    let mut variety: Vec<String> =
        landmarks.iter().filter_map(|l| relation_phrase(target, twins, l)).collect();
    variety.extend(extreme_phrase(target, kind));
    match position {
        Some(phrase) if variety.is_empty() || !rng.random_bool(VARIETY) => Some(phrase),
        _ if variety.is_empty() => None,
        _ => Some(variety.swap_remove(rng.random_range(0..variety.len()))),
    }
}

/// "the small red circle on the left" / "the second small red circle from the top", with its
/// rank (0 for a position): when every twin is clearly before or after `target` along `axis`.
fn rank_phrase(target: &AnnotatedObject, twins: &[&AnnotatedObject], axis: Axis) -> Option<(usize, String)> {
    let mut before = 0;
    let mut after = 0;
    for twin in twins {
        if axis.clearly_before(twin, target) {
            before += 1;
        } else if axis.clearly_before(target, twin) {
            after += 1;
        } else {
            return None;
        }
    }
    let (start, end) = axis.sides();
    let (rank, side) = if before <= after { (before, start) } else { (after, end) };
    let attrs = attributes(target);
    let phrase = match (rank, axis) {
        (0, Axis::X) => format!("the {attrs} on the {side}"),
        (0, Axis::Y) => format!("the {attrs} at the {side}"),
        _ => format!("the {} {attrs} from the {side}", ORDINALS.get(rank - 1)?),
    };
    Some((rank, phrase))
}

/// "the small red circle at the top left": no twin is clearly before `target` towards that
/// corner on either axis, and each is clearly after it on one axis at least.
fn corner_phrase(target: &AnnotatedObject, twins: &[&AnnotatedObject]) -> Option<String> {
    // Whether `a` is clearly before `b` along `axis`, read from the start (`true`) or the end.
    let before = |axis: Axis, from_start: bool, a: &AnnotatedObject, b: &AnnotatedObject| {
        if from_start { axis.clearly_before(a, b) } else { axis.clearly_before(b, a) }
    };
    let corners = [
        (true, true, "top left"),
        (true, false, "top right"),
        (false, true, "bottom left"),
        (false, false, "bottom right"),
    ];
    let (_, _, corner) = corners.into_iter().find(|&(top, left, _)| {
        twins.iter().all(|twin| {
            let ahead = before(Axis::X, left, twin, target) || before(Axis::Y, top, twin, target);
            let behind = before(Axis::X, left, target, twin) || before(Axis::Y, top, target, twin);
            !ahead && behind
        })
    })?;
    Some(format!("the {} at the {corner}", attributes(target)))
}

/// "the small red circle left of the large green heart": `target` is clearly on that side of
/// the landmark and no twin has its centre on that side at all.
fn relation_phrase(
    target: &AnnotatedObject,
    twins: &[&AnnotatedObject],
    landmark: &AnnotatedObject,
) -> Option<String> {
    // How far the target's centre is from the landmark's, along `axis`.
    let offset = |axis: Axis| axis.centre_and_extent(target).0 - axis.centre_and_extent(landmark).0;
    let holds = |axis: Axis, before: bool| {
        let (landmark_centre, _) = axis.centre_and_extent(landmark);
        let clearly = if before {
            axis.clearly_before(target, landmark)
        } else {
            axis.clearly_before(landmark, target)
        };
        let other_axis = match axis {
            Axis::X => Axis::Y,
            Axis::Y => Axis::X,
        };
        clearly
            && offset(axis).abs() >= offset(other_axis).abs()
            && twins.iter().all(|twin| {
                let (centre, _) = axis.centre_and_extent(twin);
                if before { centre >= landmark_centre } else { centre <= landmark_centre }
            })
    };
    let relations = [
        (Axis::X, true, "left of"),
        (Axis::X, false, "right of"),
        (Axis::Y, true, "above"),
        (Axis::Y, false, "below"),
    ];
    let (_, _, relation) = relations.into_iter().find(|(axis, before, _)| holds(*axis, *before))?;
    Some(format!("the {} {relation} the {}", attributes(target), attributes(landmark)))
}

/// "the largest red circle" / "the smallest red circle": compared with `kind`, every other
/// object of the same colour and shape.
fn extreme_phrase(target: &AnnotatedObject, kind: &[&AnnotatedObject]) -> Option<String> {
    let extreme = if kind.iter().all(|o| target.area >= EXTREME_RATIO * o.area) {
        "largest"
    } else if kind.iter().all(|o| EXTREME_RATIO * target.area <= o.area) {
        "smallest"
    } else {
        return None;
    };
    Some(format!("the {extreme} {} {}", target.colour.name(), target.shape.name()))
}

/// Builds the caption for objects with these phrases (in object order). An image without
/// objects gets an empty caption.
pub(crate) fn ground(object_phrases: &[String]) -> Grounding {
    let Ok(prompt) = Prompt::new(object_phrases) else {
        return Grounding { caption: String::new(), phrases: vec![], spans: vec![], object_phrase: vec![] };
    };
    let phrases = prompt.phrases().to_vec();
    // Prompt keeps phrases as given (they are already lower-case, single-spaced) and drops
    // repeats, so every object's phrase is found.
    let object_phrase =
        object_phrases.iter().map(|p| phrases.iter().position(|q| q == p).unwrap_or(0)).collect();
    Grounding { caption: prompt.caption(), spans: prompt.phrase_spans(), phrases, object_phrase }
}

#[cfg(test)]
mod tests {
    use glint_core::geometry::BoxXyxy;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::synth::{Colour, Shape, SizeClass};

    /// A small red circle (or `colour` / `shape`) with this box; its area is that of the box.
    fn object(colour: Colour, shape: Shape, [x0, y0, x1, y1]: [f32; 4]) -> AnnotatedObject {
        let bbox = BoxXyxy::new(x0, y0, x1, y1);
        AnnotatedObject { shape, colour, size: SizeClass::Small, bbox, area: bbox.area() }
    }

    fn red_circle(bbox: [f32; 4]) -> AnnotatedObject {
        object(Colour::Red, Shape::Circle, bbox)
    }

    /// The phrases chosen with each of `seeds` seeds.
    fn described(objects: &[AnnotatedObject], seeds: u64) -> Vec<Vec<String>> {
        (0..seeds).map(|seed| describe(objects, &mut ChaCha8Rng::seed_from_u64(seed))).collect()
    }

    #[test]
    fn unique_objects_keep_their_attributes_and_twins_get_left_and_right() {
        let objects = [
            red_circle([10.0, 10.0, 30.0, 30.0]),
            object(Colour::Blue, Shape::Star, [40.0, 10.0, 60.0, 30.0]),
            red_circle([70.0, 12.0, 90.0, 32.0]),
        ];
        // Equal areas and the star is between them on x only: no variety applies but "left of"
        // / "right of" the star, which is chosen sometimes.
        for phrases in described(&objects, 20) {
            assert_eq!(phrases[1], "a small blue star");
            assert!(
                ["the small red circle on the left", "the small red circle left of the small blue star"]
                    .contains(&phrases[0].as_str()),
                "{phrases:?}"
            );
            assert!(
                ["the small red circle on the right", "the small red circle right of the small blue star"]
                    .contains(&phrases[2].as_str()),
                "{phrases:?}"
            );
        }
        let all: Vec<String> = described(&objects, 20).concat();
        assert!(all.contains(&"the small red circle on the left".to_string()), "positions come first");
        assert!(all.iter().any(|p| p.contains("left of")), "relations appear for variety");
    }

    #[test]
    fn a_relation_names_the_main_direction() {
        // The top circle is above the star, but far more to its left: not "above" it; and both
        // circles are left of it: not "left of" either.
        let objects = [
            red_circle([10.0, 10.0, 30.0, 30.0]),
            red_circle([10.0, 190.0, 30.0, 210.0]),
            object(Colour::Blue, Shape::Star, [190.0, 50.0, 210.0, 70.0]),
        ];
        for phrases in described(&objects, 20) {
            assert_eq!(
                phrases[..2],
                ["the small red circle at the top", "the small red circle at the bottom"]
            );
        }
    }

    #[test]
    fn twins_too_close_on_x_are_told_apart_by_height() {
        // Centres 6 px apart on x (less than a quarter of the summed widths, 10 px).
        let objects = [red_circle([16.0, 60.0, 36.0, 80.0]), red_circle([10.0, 10.0, 30.0, 30.0])];
        let phrases = describe(&objects, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(phrases, ["the small red circle at the bottom", "the small red circle at the top"]);
    }

    #[test]
    fn a_middle_twin_gets_an_ordinal() {
        let objects = [
            red_circle([50.0, 10.0, 70.0, 30.0]),
            red_circle([90.0, 10.0, 110.0, 30.0]),
            red_circle([10.0, 10.0, 30.0, 30.0]),
        ];
        let phrases = describe(&objects, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(
            phrases,
            [
                "the second small red circle from the left",
                "the small red circle on the right",
                "the small red circle on the left"
            ]
        );
    }

    #[test]
    fn a_clearly_larger_twin_may_be_the_largest_of_its_colour_and_shape() {
        let objects = [red_circle([10.0, 10.0, 30.0, 30.0]), red_circle([60.0, 10.0, 90.0, 40.0])];
        let all: Vec<String> = described(&objects, 30).concat();
        assert!(all.contains(&"the largest red circle".to_string()), "{all:?}");
        assert!(all.contains(&"the smallest red circle".to_string()), "{all:?}");
        // A different colour does not count: the blue circle is larger, yet "the largest red
        // circle" is still true.
        let with_blue =
            [objects[0], objects[1], object(Colour::Blue, Shape::Circle, [0.0, 50.0, 60.0, 110.0])];
        assert!(described(&with_blue, 30).concat().contains(&"the largest red circle".to_string()));
        // Within 25% of each other, neither is "the largest".
        let close = [red_circle([10.0, 10.0, 30.0, 30.0]), red_circle([60.0, 10.0, 81.0, 31.0])];
        assert!(
            !described(&close, 30).concat().iter().any(|p| p.contains("largest") || p.contains("smallest"))
        );
    }

    #[test]
    fn a_grid_of_twins_is_named_by_corners() {
        // A 2×2 grid: every twin ties with one other on x and with another on y.
        let objects = [
            red_circle([10.0, 10.0, 30.0, 30.0]),
            red_circle([60.0, 10.0, 80.0, 30.0]),
            red_circle([10.0, 60.0, 30.0, 80.0]),
            red_circle([60.0, 60.0, 80.0, 80.0]),
        ];
        let phrases = describe(&objects, &mut ChaCha8Rng::seed_from_u64(0));
        let corners = ["top left", "top right", "bottom left", "bottom right"];
        let expected = corners.map(|corner| format!("the small red circle at the {corner}"));
        assert_eq!(phrases, expected);
    }

    #[test]
    fn twins_nothing_tells_apart_share_the_plain_phrase() {
        // A plus of five: the centre one is neither a side, a corner nor an ordinal.
        let objects = [
            red_circle([40.0, 40.0, 60.0, 60.0]),
            red_circle([10.0, 40.0, 30.0, 60.0]),
            red_circle([70.0, 40.0, 90.0, 60.0]),
            red_circle([40.0, 10.0, 60.0, 30.0]),
            red_circle([40.0, 70.0, 60.0, 90.0]),
        ];
        let phrases = describe(&objects, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(phrases[0], "a small red circle");
        let sides = ["on the left", "on the right", "at the top", "at the bottom"];
        for (phrase, side) in phrases[1..].iter().zip(sides) {
            assert_eq!(*phrase, format!("the small red circle {side}"));
        }
        let g = ground(&phrases);
        assert_eq!(g.object_phrase, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn caption_spans_follow_the_phrases() {
        let objects =
            ["the small red circle on the left", "a large blue star", "the small red circle on the right"]
                .map(String::from);
        let g = ground(&objects);
        assert_eq!(
            g.caption,
            "the small red circle on the left . a large blue star . the small red circle on the right ."
        );
        assert_eq!(g.spans, vec![0..32, 35..52, 55..88]);
        assert_eq!(g.object_phrase, vec![0, 1, 2]);
    }

    #[test]
    fn no_objects_no_caption() {
        let g = ground(&[]);
        assert!(g.caption.is_empty() && g.object_phrase.is_empty());
    }
}
