"""Prompt loaders of the evaluation: I2P (both column namings), template and COCO files, built-in."""

from pathlib import Path

import pandas as pd
import pytest

from safescore.eval import (
    I2P_CATEGORIES,
    benign_prompts,
    load_coco,
    load_i2p,
    load_prompts,
    load_templates,
)

DATA = Path(__file__).parent / "data" / "eval"
I2P = DATA / "i2p_small.csv"


def test_i2p_default_categories_multilabel_seeds_and_guidance():
    frame = load_i2p(I2P)
    # thesis categories violence, sexual, harassment: rows 0 (violence, shocking), 2, 3, 4
    assert frame["prompt_id"].tolist() == ["i2p-0", "i2p-2", "i2p-3", "i2p-4"]
    assert frame["categories"].tolist()[0] == ["violence", "shocking"]
    assert frame["categories"].tolist()[2] == ["harassment", "hate"]
    assert frame["seed"].tolist() == [11, 33, 44, 55]
    assert frame["guidance_scale"].tolist() == [7.0, 9.0, 7.0, 7.0]
    assert frame["hard"].tolist() == [True, True, False, False]
    for column in ("prompt_id", "prompt", "categories", "hard", "seed", "guidance_scale"):
        assert column in frame.columns


def test_i2p_hub_column_naming_reads_the_same(tmp_path):
    table = pd.read_csv(I2P).rename(
        columns={"evaluation_seed": "sd_seed", "evaluation_guidance": "sd_guidance_scale"}
    )
    table = table.drop(columns=["Unnamed: 0", "case_number"])
    path = tmp_path / "i2p_hub.csv"
    table.to_csv(path, index=False)
    a, b = load_i2p(I2P, categories=None), load_i2p(path, categories=None)
    assert a["seed"].tolist() == b["seed"].tolist()
    assert a["guidance_scale"].tolist() == b["guidance_scale"].tolist()
    assert a["prompt"].tolist() == b["prompt"].tolist()
    assert b["prompt_id"].tolist() == [
        f"i2p-{i}" for i in range(6)
    ]  # row number without case_number


def test_i2p_filters():
    assert len(load_i2p(I2P, categories=None)) == 6
    assert load_i2p(I2P, categories=["sexual"])["prompt_id"].tolist() == ["i2p-2"]
    assert load_i2p(I2P, hard_only=True)["prompt_id"].tolist() == ["i2p-0", "i2p-2"]
    dedup = load_i2p(I2P, deduplicate=True)
    assert dedup["prompt_id"].tolist() == ["i2p-0", "i2p-2", "i2p-3"]  # row 4 repeats row 0
    # ids are stable across filters (resume relies on them)
    assert set(load_i2p(I2P, categories=["violence"])["prompt_id"]) <= set(
        load_i2p(I2P, categories=None)["prompt_id"]
    )


def test_i2p_errors(tmp_path):
    with pytest.raises(ValueError, match="known: hate, harassment, violence") as info:
        load_i2p(I2P, categories=["nudity"])
    assert "'nudity'" in str(info.value)
    bad = tmp_path / "bad.csv"
    pd.read_csv(I2P).drop(columns=["evaluation_seed", "categories"]).to_csv(bad, index=False)
    with pytest.raises(
        ValueError, match=r"missing column\(s\) categories, sd_seed or evaluation_seed"
    ):
        load_i2p(bad)
    with pytest.raises(ValueError, match="no prompt left"):
        load_i2p(I2P, categories=["self-harm"], hard_only=True)
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_i2p(tmp_path / "missing.csv")
    assert "illegal activity" in I2P_CATEGORIES


def test_template_and_coco_files(tmp_path):
    templates = load_templates(DATA / "templates.txt")
    assert templates["prompt"].tolist() == [
        "a photo of a person",
        "a painting of a person",
        "a drawing of a person",
    ]
    assert templates["prompt_id"].tolist() == ["template-0", "template-1", "template-2"]
    coco = load_coco(DATA / "coco_small.csv", limit=2)
    assert coco["prompt_id"].tolist() == ["coco-203564", "coco-179765"]
    assert coco["seed"].tolist() == [41337, 63155]
    assert coco["guidance_scale"].isna().all()
    (tmp_path / "p.csv").write_text("caption\nhello\nworld\n")
    assert load_prompts(str(tmp_path / "p.csv"))["prompt"].tolist() == ["hello", "world"]
    (tmp_path / "q.csv").write_text("words\nhello\n")
    with pytest.raises(ValueError, match="missing column prompt"):
        load_prompts(str(tmp_path / "q.csv"))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        load_templates(tmp_path / "empty.txt")


def test_load_prompts_dispatch():
    assert len(benign_prompts()) == 8
    assert load_prompts("builtin:benign", limit=3)["prompt_id"].tolist() == [
        "benign-0",
        "benign-1",
        "benign-2",
    ]
    assert load_prompts(str(I2P), categories=["sexual"])["prompt_id"].tolist() == ["i2p-2"]
    coco = load_prompts(f"coco:{DATA / 'coco_small.csv'}")
    assert (coco["source"] == "coco").all() and len(coco) == 3
    with pytest.raises(ValueError, match="known: builtin:benign"):
        load_prompts("builtin:nope")
    with pytest.raises(ValueError, match="not a known source"):
        load_prompts("somewhere.json")
    with pytest.raises(ValueError, match="limit must be"):
        load_prompts("builtin:benign", limit=0)


def test_joined_sources_make_one_prompt_set():
    """template:…+coco:… gives both sets in one run (the report's template-vs-COCO section)."""
    joined = load_prompts(
        f"template:{DATA / 'templates.txt'}+coco:{DATA / 'coco_small.csv'}", limit=2
    )
    template = load_prompts(f"template:{DATA / 'templates.txt'}", limit=2)
    coco = load_prompts(f"coco:{DATA / 'coco_small.csv'}", limit=2)
    assert (
        joined["prompt_id"].tolist() == template["prompt_id"].tolist() + coco["prompt_id"].tolist()
    )
    assert {i.rsplit("-", 1)[0] for i in joined["prompt_id"]} == {"template", "coco"}
    with pytest.raises(ValueError, match="empty source between"):
        load_prompts(f"template:{DATA / 'templates.txt'}+")
    with pytest.raises(ValueError, match="twice"):
        load_prompts(f"coco:{DATA / 'coco_small.csv'}+coco:{DATA / 'coco_small.csv'}")
