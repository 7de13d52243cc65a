"""A synthetic product catalog with a long tail, in the importer's CSV directory format.

    python -m benchmarks.synthetic_catalog --out DIR [--items 12000] [--interactions 200000] [--seed 0]
    longtail data prepare --source DIR --format csv --out DATA

Items: product titles composed from a brand, an adjective, a product noun of one of 40 categories and
attributes (e.g. "Norvik compact wireless mouse, black, 2-pack"). Users: each prefers 1–3 categories;
item popularity is Zipf-distributed (s = 1.1) inside a category, so most items are rarely touched.
Sessions drift in time, so the order of a history carries signal. Used for the issue 7 timing of the
data-scaled defaults (≈200k interactions, ≈12k items).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

CATEGORIES = {
    "mouse": "computer",
    "keyboard": "computer",
    "monitor": "computer",
    "webcam": "computer",
    "headphones": "audio",
    "speaker": "audio",
    "microphone": "audio",
    "earbuds": "audio",
    "blender": "kitchen",
    "kettle": "kitchen",
    "toaster": "kitchen",
    "knife set": "kitchen",
    "frying pan": "kitchen",
    "coffee grinder": "kitchen",
    "rice cooker": "kitchen",
    "mixing bowl": "kitchen",
    "tent": "outdoor",
    "sleeping bag": "outdoor",
    "backpack": "outdoor",
    "headlamp": "outdoor",
    "water bottle": "outdoor",
    "trekking poles": "outdoor",
    "camping stove": "outdoor",
    "hammock": "outdoor",
    "yoga mat": "fitness",
    "dumbbell": "fitness",
    "jump rope": "fitness",
    "resistance band": "fitness",
    "running shoes": "apparel",
    "rain jacket": "apparel",
    "wool socks": "apparel",
    "beanie": "apparel",
    "desk lamp": "home",
    "throw pillow": "home",
    "bath towel": "home",
    "wall clock": "home",
    "board game": "toys",
    "puzzle": "toys",
    "building blocks": "toys",
    "plush toy": "toys",
}
BRANDS = [
    "Norvik",
    "Altura",
    "Kestrel",
    "Brightwell",
    "Oakridge",
    "Zenko",
    "Pellar",
    "Vantor",
    "Lumio",
    "Craftmark",
    "Ridgeline",
    "Solace",
    "Tidewater",
    "Halcyon",
    "Emberly",
    "Quillon",
    "Arcadia",
    "Fernhill",
]
ADJECTIVES = [
    "compact",
    "wireless",
    "ergonomic",
    "lightweight",
    "premium",
    "classic",
    "foldable",
    "heavy-duty",
    "portable",
    "quiet",
    "waterproof",
    "insulated",
    "adjustable",
    "slim",
    "rechargeable",
    "eco",
]
COLORS = ["black", "white", "grey", "navy", "forest green", "red", "sand", "teal", "charcoal", "orange"]
PACKS = ["", "", "", ", 2-pack", ", 3-pack", ", set of 4", ", large", ", small", ", travel size"]


def make(n_items: int, n_interactions: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    nouns = list(CATEGORIES)
    item_noun = rng.integers(0, len(nouns), n_items)
    items = [
        {
            "item_id": f"P{i:06d}",
            "title": f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {nouns[n]}, "
            f"{rng.choice(COLORS)}{rng.choice(PACKS)}",
            "category": CATEGORIES[nouns[n]],
        }
        for i, n in enumerate(item_noun)
    ]
    by_noun = [np.flatnonzero(item_noun == n) for n in range(len(nouns))]
    weights = []
    for members in by_noun:  # Zipf popularity inside each product noun, random order of items
        w = 1.0 / np.arange(1, len(members) + 1) ** 1.1
        weights.append(w / w.sum())
    n_users = max(1, n_interactions // 8)  # more than needed: generation stops at n_interactions
    rows: list[dict] = []
    t0 = 1_700_000_000
    for u in range(n_users):
        length = int(np.clip(rng.geometric(1 / 14), 3, 200))
        liked = rng.choice(len(nouns), rng.integers(1, 4), replace=False)
        t, seen = t0 + int(rng.integers(0, 86400 * 300)), set()
        noun = int(rng.choice(liked))
        for _ in range(length):
            if rng.random() < 0.3:  # sessions drift to another liked noun
                noun = int(rng.choice(liked))
            members = by_noun[noun]
            item = int(members[rng.choice(len(members), p=weights[noun])])
            t += int(rng.integers(60, 86400))
            if item not in seen and len(rows) < n_interactions:
                seen.add(item)
                rows.append({"user_id": f"U{u:06d}", "item_id": items[item]["item_id"], "timestamp": t})
        if len(rows) >= n_interactions:
            break
    return items, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--items", type=int, default=12000)
    ap.add_argument("--interactions", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    items, rows = make(args.items, args.interactions, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in (("items", items), ("interactions", rows)):
        with (args.out / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    touched = len({r["item_id"] for r in rows})
    print(f"wrote {len(items)} items ({touched} touched) and {len(rows)} interactions to {args.out}")


if __name__ == "__main__":
    main()
