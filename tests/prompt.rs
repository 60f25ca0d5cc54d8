//! glint's prompt pipeline against the Python reference (fixtures made by
//! `tests/fixtures/make_prompt.py` with transformers and the bert-base-uncased tokenizer).
//!
//! Token ids, offsets, token sets, attention masks, position ids and label text must match
//! exactly; float matrices and phrase scores within 1e-6 (absolute).

use std::ops::Range;
use std::path::PathBuf;

use glint::core::prompt::{
    MAX_TEXT_LEN, PhraseReduction, PositiveMap, Prompt, PromptError, TextTokenizer, best_phrase,
    chunk_prompt, phrase_scores, sub_sentence_mask, transformers_label_text,
};
use glint::data::coco::load_coco;
use serde::Deserialize;

const TOLERANCE: f32 = 1e-6;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap()
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixtures().join("prompt").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Cases<T> {
    cases: Vec<T>,
}

#[derive(Deserialize)]
struct TokenizeCase {
    caption: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    offsets: Vec<(usize, usize)>,
    special: Vec<bool>,
}

#[test]
fn tokenization_matches_transformers() {
    let tokenizer = tokenizer();
    let fixture: Cases<TokenizeCase> = load("tokenize.json");
    assert!(fixture.cases.iter().any(|c| c.ids.len() > 128), "fixture covers long captions");
    for case in &fixture.cases {
        let got = tokenizer.encode(&case.caption).unwrap();
        let what = format!("caption {:?}", case.caption);
        assert_eq!(got.caption(), case.caption);
        assert_eq!(got.ids(), case.ids, "{what}");
        assert_eq!(got.tokens(), case.tokens, "{what}");
        assert_eq!(got.offsets(), case.offsets, "{what} (character offsets)");
        assert_eq!(got.special(), case.special, "{what}");
    }
}

#[derive(Deserialize)]
struct PositiveMapCase {
    note: String,
    caption: String,
    spans: Vec<Vec<(usize, usize)>>,
    num_tokens: usize,
    tokens: Vec<Vec<usize>>,
    dense: Vec<Vec<f32>>,
}

#[test]
fn positive_maps_match_glip_span_logic() {
    let tokenizer = tokenizer();
    let fixture: Cases<PositiveMapCase> = load("positive_map.json");
    for case in &fixture.cases {
        let what = format!("{} in {:?}", case.note, case.caption);
        let caption = tokenizer.encode(&case.caption).unwrap();
        let spans: Vec<Vec<Range<usize>>> =
            case.spans.iter().map(|p| p.iter().map(|&(b, e)| b..e).collect()).collect();
        let map = PositiveMap::from_spans(&caption, &spans);
        assert_eq!(map.num_tokens(), case.num_tokens, "{what}");
        assert_eq!(map.phrase_tokens(), case.tokens, "{what}: spans {:?}", case.spans);

        let dense = map.dense();
        let expected: Vec<f32> = case.dense.iter().flatten().copied().collect();
        assert_eq!(dense.len(), expected.len(), "{what}");
        for (i, (got, want)) in dense.iter().zip(&expected).enumerate() {
            assert!((got - want).abs() <= TOLERANCE, "{what}: dense[{i}] {got} vs {want}");
        }

        // A prompt's own phrase spans give the same map through `encode_prompt`.
        if case.note == "prompt phrase spans" {
            let prompt = Prompt::parse(&case.caption).unwrap();
            assert_eq!(prompt.caption(), case.caption);
            let encoded = tokenizer.encode_prompt(&prompt).unwrap();
            assert_eq!(encoded.positive_map.phrase_tokens(), case.tokens, "{what}");
        }
    }
}

#[derive(Deserialize)]
struct TextMaskFixture {
    special_tokens: Vec<u32>,
    cases: Vec<TextMaskCase>,
}

#[derive(Deserialize)]
struct TextMaskCase {
    caption: String,
    ids: Vec<u32>,
    mask: Vec<String>,
    position_ids: Vec<u32>,
}

#[test]
fn text_masks_match_transformers() {
    let tokenizer = tokenizer();
    let fixture: TextMaskFixture = load("text_mask.json");
    assert_eq!(tokenizer.delimiter_ids(), fixture.special_tokens);
    for case in &fixture.cases {
        let what = format!("caption {:?} ids {:?}", case.caption, case.ids);
        let mask = sub_sentence_mask(&case.ids, &fixture.special_tokens);
        let rows: Vec<String> = mask
            .mask()
            .chunks(mask.len().max(1))
            .map(|row| row.iter().map(|&b| if b { '1' } else { '0' }).collect())
            .collect();
        assert_eq!(rows, case.mask, "{what}");
        assert_eq!(mask.position_ids(), case.position_ids, "{what}");
    }
    // The unpadded captions go through the tokenizer too.
    let prompt = Prompt::parse("person . bicycle . car . motorcycle . airplane . traffic light .").unwrap();
    let encoded = tokenizer.encode_prompt(&prompt).unwrap();
    let case = fixture.cases.iter().find(|c| c.caption == prompt.caption()).unwrap();
    assert_eq!(encoded.tokens.ids(), case.ids);
    assert_eq!(encoded.text_mask.position_ids(), case.position_ids);
}

#[derive(Deserialize)]
struct PhrasesCase {
    phrases: Vec<String>,
    caption: String,
    width: usize,
    text_threshold: f32,
    boxes: Vec<BoxCase>,
}

#[derive(Deserialize)]
struct BoxCase {
    probs: Vec<f32>,
    label: String,
    max_scores: Vec<f32>,
    mean_scores: Vec<f32>,
}

#[test]
fn phrase_extraction_matches_transformers_post_processing() {
    let tokenizer = tokenizer();
    let fixture: Cases<PhrasesCase> = load("phrases.json");
    let mut boxes = 0;
    for case in &fixture.cases {
        let prompt = Prompt::new(&case.phrases).unwrap();
        assert_eq!(prompt.caption(), case.caption);
        let encoded = tokenizer.encode_prompt(&prompt).unwrap();
        for (b, bx) in case.boxes.iter().enumerate() {
            let what = format!("{:?} box {b}", case.caption);
            // The model's output is `width` wide; positions past the caption have probability 0.
            let mut probs = bx.probs.clone();
            probs.resize(case.width, 0.0);
            let label =
                transformers_label_text(&tokenizer, &encoded.tokens, &probs, case.text_threshold).unwrap();
            assert_eq!(label, bx.label, "{what}");

            let max = phrase_scores(&probs, &encoded.positive_map, PhraseReduction::Max);
            let mean = phrase_scores(&probs, &encoded.positive_map, PhraseReduction::Mean);
            for (got, want) in max.iter().zip(&bx.max_scores).chain(mean.iter().zip(&bx.mean_scores)) {
                assert!((got - want).abs() <= TOLERANCE, "{what}: {got} vs {want}");
            }
            assert_eq!((max.len(), mean.len()), (case.phrases.len(), case.phrases.len()));

            let (phrase, score) = best_phrase(&probs, &encoded.positive_map).unwrap();
            let best = bx.max_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(bx.max_scores.iter().position(|&s| s == best), Some(phrase), "{what}");
            assert!((score - best).abs() <= TOLERANCE, "{what}");
            boxes += 1;
        }
    }
    assert!(boxes > 50, "fixture has {boxes} boxes");
}

#[test]
fn a_long_prompt_chunks_into_valid_model_inputs() {
    let tokenizer = tokenizer();
    let phrases: Vec<String> = (0..500).map(|i| format!("object number {i} with a long-ish name")).collect();
    let prompt = Prompt::new(&phrases).unwrap();
    let chunked = chunk_prompt(&prompt, &tokenizer, MAX_TEXT_LEN).unwrap();
    let mut covered: Vec<usize> = Vec::new();
    for chunk in chunked.chunks() {
        let encoded = tokenizer.encode_prompt(&chunk.prompt).unwrap();
        assert!(encoded.tokens.len() <= MAX_TEXT_LEN);
        assert_eq!(encoded.text_mask.len(), encoded.tokens.len());
        assert!(encoded.positive_map.phrases_without_tokens().is_empty());
        covered.extend(&chunk.phrase_indices);
    }
    assert_eq!(covered, (0..500).collect::<Vec<_>>());
    // Per-chunk results merge back to the original phrase order.
    let per_chunk: Vec<Vec<String>> = chunked.chunks().iter().map(|c| c.prompt.phrases().to_vec()).collect();
    assert_eq!(chunked.merge(per_chunk).unwrap(), phrases);
}

#[test]
fn phrases_the_tokenizer_deletes_are_errors_not_silent_drops() {
    let tokenizer = tokenizer();
    // A zero-width space and a lone combining accent: BERT's normaliser removes both.
    let prompt = Prompt::new(["cat", "\u{200b}", "remote control", "\u{301}"]).unwrap();
    let expected = PromptError::NoTokens { phrases: vec!["\u{200b}".into(), "\u{301}".into()] };
    assert_eq!(tokenizer.encode_prompt(&prompt).unwrap_err(), expected);
    assert_eq!(chunk_prompt(&prompt, &tokenizer, MAX_TEXT_LEN).unwrap_err(), expected);
    let message = expected.to_string();
    assert!(message.starts_with(r#"phrases "\u{200b}", "\u{301}" give no token"#), "{message}");
    // An accented word keeps its letters and is fine.
    assert!(tokenizer.encode_prompt(&Prompt::new(["e\u{301}clair"]).unwrap()).is_ok());
}

#[test]
fn phrase_delimiters_are_refused_so_captions_parse_back() {
    for (phrase, delimiter) in [("St. Bernard", '.'), ("what is this?", '?')] {
        let err = Prompt::new(["dog", phrase]).unwrap_err();
        let shown = phrase.to_lowercase();
        assert_eq!(err, PromptError::Delimiter { phrase: shown.clone(), delimiter });
        assert_eq!(
            err.to_string(),
            format!("phrase \"{shown}\" contains '{delimiter}', which separates phrases; remove it")
        );
    }
    let prompt = Prompt::new(["Hot  Dog", "crème brûlée", "state-of-the-art detector!"]).unwrap();
    assert_eq!(Prompt::parse(&prompt.caption()), Ok(prompt));
}

#[test]
fn a_coco_category_with_a_dot_fails_to_load_naming_file_and_category() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dogs.json");
    std::fs::write(
        &path,
        r#"{"images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]}],
            "categories": [{"id": 1, "name": "poodle"}, {"id": 2, "name": "St. Bernard"}]}"#,
    )
    .unwrap();
    let message = load_coco(&path, dir.path()).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: category id 2 \"St. Bernard\": phrase \"st. bernard\" contains '.', which separates \
             phrases; remove it",
            path.display()
        )
    );
}
