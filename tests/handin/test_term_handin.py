"""Each term's hand-in as its grader expects it, built from a trained run with the Kaggle and W&B stand-ins,
and `bundle --check`, the grader's test run before uploading."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile

import pytest
from conftest import ROOT, call_cli
from standins import Run, WandbApi, kaggle_account, submission

from helpers.core.terms import all_terms, get_term, schema
from helpers.handin import members
from helpers.handin.check import check_bundle
from helpers.handin.schema import problems

F26 = get_term("f26")
MAIN, SLACK = F26.competition, F26.slack_competition
LINK = "|WB=me/hw2p2-ablations/{}"


@pytest.fixture
def handin(trained_run, tmp_path):
    """A copy of the trained run and the files a hand-in is made from; returns the bundle command's arguments."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (tmp_path / "ack.txt").write_text("ACKNOWLEDGED = True\n")
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / "nb.ipynb").write_text('{"cells": []}')
    return ["bundle", "--run", run, "--notebook", tmp_path / "nb.ipynb", "--acknowledgement", tmp_path / "ack.txt",
            "--readme", tmp_path / "README.txt"]


def _f26_services(monkeypatch, pages=None, runs=None, username="student", forbidden=()):
    """Put the stand-ins where the hand-in opens its clients; returns them."""
    pages = pages or {MAIN: [[submission(11, 20, "0.91", description=LINK.format("aaa")),
                              submission(12, 21, "0.95", "0.94", description=LINK.format("bbb"))],
                             [submission(13, 22, "0.90", description="quick try")]],
                      SLACK: [[submission(21, 25, "0.96", description=LINK.format("aaa"))]]}
    runs = runs or {f"me/hw2p2-ablations/{run_id}": Run(run_id, 0.1) for run_id in ("aaa", "bbb")}
    account, api = kaggle_account(username, pages, forbidden), WandbApi(runs)
    monkeypatch.setitem(members.OPENERS, "kaggle", lambda: account)
    monkeypatch.setitem(members.OPENERS, "wandb", lambda: api)
    return account, api


def _read(path, name):
    data = zipfile.ZipFile(path).read(name)
    return pickle.loads(data) if name.endswith(".pkl") else json.loads(data)


def test_fall_2026_zip_holds_exactly_the_graders_members_and_passes_the_check(handin, tmp_path, monkeypatch,
                                                                              capsys):
    account, _ = _f26_services(monkeypatch)
    out = tmp_path / "f26.zip"
    code, stdout, err = call_cli(capsys, *handin, "--term", "f26", "--out", out)
    assert code == 0, err
    assert stdout.rstrip().endswith("then upload f26.zip to Gradescope (Fall 2026's final hand-in)")
    assert sorted(zipfile.ZipFile(out).namelist()) == sorted(
        ["ACKNOWLEDGEMENT.txt", "README.txt", "model_metadata.json", "wandb_export.pkl", "kaggle_metadata.json",
         "nb.ipynb"])
    kaggle = _read(out, "kaggle_metadata.json")
    # ranked by the combined score, higher first; a private score wins over the public one
    assert [s["submission_ref"] for s in kaggle["ranked_submissions"]] == ["21", "12", "11", "13"]
    assert kaggle["competitions"] == {MAIN: 3, SLACK: 1} and kaggle["total_submissions"] == 4
    assert kaggle["ranked_submissions"][1]["score"] == 0.94 and kaggle["ranked_submissions"][1]["score_source"] == "private"
    assert kaggle["authenticated_kaggle_username"] == "student" and kaggle["score_mode"] == "max"
    assert kaggle["submissions"][0]["status"] == "SubmissionStatus.COMPLETE"
    assert account.api.client.requests[:2] == [(MAIN, ""), (MAIN, "1")]  # both pages were read
    exported = _read(out, "wandb_export.pkl")
    # each run once, at its best-ranked submission: 21 names aaa, 12 names bbb (11's aaa is a repeat)
    assert [r["run_path"] for r in exported] == ["me/hw2p2-ablations/aaa", "me/hw2p2-ablations/bbb"]
    assert exported[0]["summary"]["_wandb"] == {"runtime": 321} and type(exported[0]["summary"]["_wandb"]) is dict
    assert exported[0]["history"][0]["EER"] == 0.4
    metadata = _read(out, "model_metadata.json")
    assert metadata["model"]["class_name"] == "FaceModel" and metadata["framework"]["backend_name"] == "torch"
    for name, member in (("model_metadata.json", "f26_model_metadata"), ("kaggle_metadata.json", "f26_kaggle_metadata"),
                         ("wandb_export.pkl", "f26_wandb_run")):
        value = _read(out, name)
        assert problems(value, schema(member), name) == []
        first = value[0] if isinstance(value, list) else value
        table = schema(member)[0] if isinstance(schema(member), list) else schema(member)
        assert list(first) == list(table)  # exactly the backend's fields, in its order
    code, stdout, _ = call_cli(capsys, "bundle", "--check", out)
    assert code == 0 and "passes Fall 2026" in stdout


def test_fall_2026_refuses_when_the_best_submission_names_no_wandb_run(handin, tmp_path, monkeypatch, capsys):
    pages = {MAIN: [[submission(11, 20, "0.91", description=LINK.format("aaa")),
                     submission(13, 22, "0.97", description="quick try")]]}
    _f26_services(monkeypatch, pages=pages, forbidden={SLACK})
    code, _, err = call_cli(capsys, *handin, "--term", "f26", "--out", tmp_path / "x.zip")
    assert code == 1 and "best-scored Kaggle submission (13" in err and "'|WB=ENTITY/PROJECT/RUN_ID'" in err
    assert not list(tmp_path.glob("*.zip"))


@pytest.mark.parametrize("case, expected", [
    ("wrong account", "belong to 'someone', not 'student'"),
    ("no submissions", "has no submissions to"),
    ("deleted run", "cannot read the W&B run me/hw2p2-ablations/bbb"),
])
def test_fall_2026_refusals_are_one_sentence_and_write_nothing(handin, tmp_path, monkeypatch, capsys, case, expected):
    if case == "wrong account":
        _f26_services(monkeypatch, username="someone")
    elif case == "no submissions":
        _f26_services(monkeypatch, pages={MAIN: [[]], SLACK: [[]]})
    else:
        _f26_services(monkeypatch, runs={"me/hw2p2-ablations/aaa": Run("aaa", 0.1)})
    code, out, err = call_cli(capsys, *handin, "--term", "f26", "--kaggle-username", "student",
                              "--out", tmp_path / "x.zip")
    assert code == 1 and expected in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.zip"))


def test_without_logins_each_missing_member_is_named_and_draft_writes_a_draft(handin, tmp_path, monkeypatch, capsys):
    for variable in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    code, _, err = call_cli(capsys, *handin, "--term", "f26", "--out", tmp_path / "final.zip")
    assert code == 1 and "wandb_export.pkl:" in err and "kaggle_metadata.json:" in err
    assert not list(tmp_path.glob("*.zip"))
    code, out, err = call_cli(capsys, *handin, "--term", "f26", "--out", tmp_path / "final.zip", "--draft")
    assert code == 0, err
    draft = tmp_path / "final_DRAFT.zip"
    assert draft.is_file() and not (tmp_path / "final.zip").exists()
    missing = zipfile.ZipFile(draft).read("MISSING.txt").decode()
    assert "DRAFT" in missing and "kaggle_metadata.json" in missing
    assert not check_bundle(draft, "f26").ok


def test_spring_2026_zip(handin, tmp_path, monkeypatch, capsys):
    term = get_term("s26")
    pages = {term.competition: [[submission(1, 10, "0.08"), submission(2, 11, "0.05", "0.06"),
                                 submission(3, 12, "0.01", by="classmate"), submission(4, 13, None)]]}
    monkeypatch.setitem(members.OPENERS, "kaggle", lambda: kaggle_account("student", pages))
    runs = {f"me/proj/r{i}": Run(f"r{i}", eer) for i, eer in enumerate([0.3, 0.1, None, 0.2] + [0.5] * 9)}
    api = WandbApi(runs)
    monkeypatch.setitem(members.OPENERS, "wandb", lambda: api)
    out = tmp_path / "s26.zip"
    code, _, err = call_cli(capsys, *handin, "--term", "s26", "--out", out, "--wandb-project", "me/proj")
    assert code == 0, err
    names = zipfile.ZipFile(out).namelist()
    stamped = [n for n in names if n.startswith("model_metadata_")]
    assert len(stamped) == 1 and len(stamped[0]) == len("model_metadata_2026-12-01_16-42.json")
    assert set(names) == {"acknowledgement.txt", "README.txt", "kaggle_data.json", "wandb_top_runs.pkl",
                          stamped[0], "nb.ipynb"}
    kaggle = _read(out, "kaggle_data.json")
    # lower is better; the classmate's 0.01 is not the student's; the private score counts
    assert kaggle["raw_score"] == pytest.approx(6.0) and kaggle["score_type"] == "private"
    assert kaggle["competition_name"] == term.competition and kaggle["submitted_slack"] is False
    top = _read(out, "wandb_top_runs.pkl")
    assert [r["id"] for r in top][:3] == ["r1", "r3", "r0"] and len(top) == 10 and "summary" not in top[0]
    assert api.orders == [("me/proj", "+summary_metrics.EER")]
    metadata = _read(out, stamped[0])
    assert set(metadata) == {"parameter_count", "model_architecture"} and "FaceModel" in metadata["model_architecture"]
    assert check_bundle(out, "s26").ok


def test_todays_zip_fails_the_newest_check_naming_the_four_members(handin, tmp_path, capsys):
    out = tmp_path / "today.zip"
    code, _, err = call_cli(capsys, *handin, "--term", "f25", "--out", out)
    assert code == 0, err
    assert check_bundle(out, "f25").ok
    code, stdout, _ = call_cli(capsys, "bundle", "--check", out)  # the newest term: Fall 2026
    assert code == 1
    for name in ("ACKNOWLEDGEMENT.txt", "model_metadata.json", "wandb_export.pkl", "kaggle_metadata.json"):
        assert name in stdout
    assert "README.txt" not in stdout.split("missing")[1].split("(")[0]


def test_check_loads_no_code_and_reads_fields_and_the_budget(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    good = {"schema_version": "1.0", "model": {"class_name": "FaceModel", "module": "m", "repr": "r",
                                                 "trainable_parameters": 31_000_000, "total_parameters": 31_000_000},
            "framework": {"backend_name": "torch", "torch_version": "2", "cuda_available": "yes", "cuda_version": None}}
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("ACKNOWLEDGEMENT.txt", "README.txt", "nb.ipynb"):
            archive.writestr(name, "x")
        archive.writestr("model_metadata.json", json.dumps(good))
        archive.writestr("wandb_export.pkl", pickle.dumps([Evil()]))
        archive.writestr("kaggle_metadata.json", "{not json")
    report = check_bundle(path, "f26")
    text = "\n".join(report.problems)
    assert "framework.cuda_available must be bool, not str" in text
    assert "wandb_export.pkl does not load" in text and "builtins.print" in text
    assert "kaggle_metadata.json does not load as JSON" in text
    good["framework"]["cuda_available"] = False
    with zipfile.ZipFile(tmp_path / "big.zip", "w") as archive:
        archive.writestr("model_metadata.json", json.dumps(good))
    assert any("31,000,000 parameters, over" in p for p in check_bundle(tmp_path / "big.zip", "f26").problems)


def test_every_term_declares_what_its_hand_in_needs():
    for term in all_terms().values():
        names = [member.content for member in term.members]
        assert {"acknowledgement", "readme", "notebook", "model_metadata"} <= set(names), term.name
        for member in term.members:
            if member.table:
                schema(member.table)  # names a declared table
        if term.online:
            assert term.competition and term.slack_competition
    assert get_term().name == "f26" and get_term("newest") == get_term("f26")


def test_the_kaggle_api_is_refused_in_one_sentence_when_missing_or_too_old(monkeypatch):
    import importlib.metadata

    from helpers.handin import kaggle

    versions = {"kaggle": "1.7.4"}
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: versions[name] if name in versions else
                        (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(name)))
    assert "predates the 2.x API" in kaggle.api_problem()
    versions.clear()
    assert "is not installed" in kaggle.api_problem()
    versions["kaggle"] = "2.2.5"
    monkeypatch.setattr(kaggle.importlib.util, "find_spec", lambda name: None if name == "six" else object())
    assert "pip install six" in kaggle.api_problem()


def test_the_toolkit_declares_the_kaggle_extra_with_six():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("kaggle>=2") for req in extras["kaggle"]) and "six" in extras["kaggle"]


def test_bundle_check_names_a_submission_whose_stored_run_disagrees_with_its_description(handin, tmp_path,
                                                                                         monkeypatch, capsys):
    _f26_services(monkeypatch)
    built = tmp_path / "f26.zip"
    assert call_cli(capsys, *handin, "--term", "f26", "--out", built)[0] == 0
    metadata = _read(built, "kaggle_metadata.json")
    top = metadata["ranked_submissions"][0]
    top["description"] = "HW2P2|WB=" + top["wandb_run_path"]  # the old toolkit's form: the grader reads no run
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(edited, "w") as target:
        for name in source.namelist():
            data = json.dumps(metadata) if name == "kaggle_metadata.json" else source.read(name)
            target.writestr(name, data)
    code, stdout, _ = call_cli(capsys, "bundle", "--check", edited, "--term", "f26")
    assert code == 1 and f"Kaggle submission {top['submission_ref']} stores the W&B run" in stdout
    assert "best-ranked Kaggle submission" in stdout and "'|WB=ENTITY/PROJECT/RUN_ID'" in stdout


def test_each_term_names_where_its_hand_in_goes():
    assert {name: term.handin_to for name, term in all_terms().items()} == {
        "f25": "Autolab", "s26": "Autolab", "f26": "Gradescope"}


def test_submission_and_export_resolve_the_wandb_entity_alike(handin, trained_run, tmp_path, monkeypatch, capsys):
    """tracking.wandb.entity, else WANDB_ENTITY, else the login's default entity: one rule for both."""
    import dataclasses

    from helpers.handin.exports import wandb_entity
    from helpers.handin.submission import kaggle_description
    from helpers.model.checkpoint import Checkpoint

    saved = dataclasses.replace(Checkpoint.load(trained_run / "best.pt"), wandb_run_id="abc123")
    project = saved.config.tracking.wandb.project
    assert saved.config.tracking.wandb.entity is None
    monkeypatch.setenv("WANDB_ENTITY", "team-x")
    assert kaggle_description(saved, F26, None) == f"|WB=team-x/{project}/abc123"
    api = WandbApi({f"team-x/{project}/r{i}": Run(f"r{i}", 0.1 + i / 100) for i in range(3)})  # default entity "me"
    monkeypatch.setitem(members.OPENERS, "wandb", lambda: api)
    monkeypatch.setitem(members.OPENERS, "kaggle", lambda: kaggle_account("student", {
        get_term("s26").competition: [[submission(1, 10, "0.08")]]}))
    code, _, err = call_cli(capsys, *handin, "--term", "s26", "--out", tmp_path / "s26.zip")
    assert code == 0, err
    assert api.orders == [(f"team-x/{project}", "+summary_metrics.EER")]  # the export read WANDB_ENTITY too
    monkeypatch.delenv("WANDB_ENTITY")
    assert wandb_entity(None, lambda: api) == "me" and wandb_entity(" set ", lambda: api) == "set"
    assert wandb_entity(None, lambda: (_ for _ in ()).throw(RuntimeError("offline"))) is None
