"""Makes the demo detections that the README's first command evaluates.

They stand in for a detector until glint ships one: the ground truth of the synthetic set
(`glint data synth --images 200 --seed 0`, val split) jittered, with misses that depend on object
size, look-alike confusions and background false positives, all seeded. Rerun after a change to
the generator:

    cargo run --release -p glint-cli -- data synth --out runs/shapes --images 200 --seed 0
    python3 datasets/demo/make_dets.py runs/shapes/val.json datasets/demo/shapes-seed0-val-dets.json
"""

import json
import sys

import numpy as np

# Look-alike shapes a weak detector confuses (category names of the synthetic set).
LOOK_ALIKES = {"pentagon": "hexagon", "hexagon": "pentagon", "diamond": "square", "square": "diamond",
               "crescent": "circle", "circle": "crescent", "star": "cross", "cross": "star"}
DETECT_PROB = {"small": 0.6, "medium": 0.85, "large": 0.95}


def size_class(area):
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def main(gt_path, out_path):
    gt = json.load(open(gt_path))
    rng = np.random.default_rng(0)
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        if rng.random() > DETECT_PROB[size_class(ann["area"])]:
            continue
        jitter = rng.normal(0.0, 0.06, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        category = ann["category_id"]
        if names[category] in LOOK_ALIKES and rng.random() < 0.15:
            category = by_name[LOOK_ALIKES[names[category]]]
        score = float(np.clip(rng.normal(0.75, 0.15), 0.05, 0.99))
        dets.append({"image_id": ann["image_id"], "category_id": category,
                     "bbox": [round(float(v), 2) for v in box], "score": round(score, 4)})
    for image_id, (width, height) in sizes.items():
        for _ in range(rng.integers(0, 4)):
            w, h = rng.uniform(10, width / 3), rng.uniform(10, height / 3)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            dets.append({"image_id": image_id, "category_id": int(rng.choice(list(names))),
                         "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                         "score": round(float(rng.uniform(0.05, 0.5)), 4)})
    with open(out_path, "w") as f:
        json.dump(dets, f)
        f.write("\n")
    print(f"wrote {len(dets)} detections for {len(sizes)} images to {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
