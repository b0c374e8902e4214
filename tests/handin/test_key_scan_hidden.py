"""Keys the hand-in scan must find where a plain byte scan does not see them: a bare key printed in a cell's
output, a key in a file's name, in a PNG's compressed text, split by a ``.wandb`` block header; and the scan
stays linear in its input."""

from __future__ import annotations

import io
import shutil
import signal
import struct
import zlib

import nbformat
import pytest
from conftest import call_cli
from PIL import Image, PngImagePlugin
from test_key_scan import KGAT, LEGACY_WANDB, NEW_WANDB, _bundle, _notebook

from helpers.handin.embedded import WANDB_BLOCK, png_compressed_texts, wandb_records
from helpers.handin.key_scan import folder_texts, scan_file


def _where(name, data):
    return [(finding.where, finding.kind) for finding in scan_file(name, data)]


@pytest.mark.parametrize("output", [
    nbformat.v4.new_output("stream", name="stdout", text=f"{LEGACY_WANDB}\n"),  # print(os.environ[...])
    nbformat.v4.new_output("execute_result", data={"text/plain": f"{LEGACY_WANDB}"}),
    nbformat.v4.new_output("display_data", data={"text/html": f"<div><pre>{LEGACY_WANDB}</pre></div>"}),
    nbformat.v4.new_output("display_data", data={"text/html": f"<table><tr><td>key</td><td>{LEGACY_WANDB}</td>"}),
], ids=["stream", "text/plain", "text/html", "html-table"])
def test_a_bare_key_printed_on_its_own_line_in_an_output_is_found(output):
    data = _notebook(("import os\nprint(os.environ['WANDB_API_KEY'])", [output]))
    assert _where("nb.ipynb", data) == [("cell 2, output", "a W&B API key (a line of 40 hex)")]


def test_a_bare_hex_line_in_source_or_amid_output_text_is_not_a_key():
    stream = nbformat.v4.new_output("stream", name="stdout", text=f"HEAD is {LEGACY_WANDB}\nepoch 1 done\n")
    assert _where("nb.ipynb", _notebook((f"# {LEGACY_WANDB}\nx = 1", [stream]))) == []


def test_a_key_in_a_notebooks_name_is_found_and_never_shown():
    found = scan_file(f"HW2P2_{KGAT}.ipynb", _notebook(("x = 1", [])))
    assert [(f.where, f.kind) for f in found] == [("its name", "a Kaggle API token (KGAT_)")]
    from helpers.handin.key_scan import describe

    assert describe(f"HW2P2_{KGAT}.ipynb", found) == "HW2P2_[key].ipynb: its name holds a Kaggle API token (KGAT_)"


def _png(**texts) -> bytes:
    """A 2x2 PNG holding ``texts``: ``ztxt``, a deflated zTXt chunk; ``itxt``, a deflated iTXt one."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "matplotlib")  # tEXt, as matplotlib writes
    if "ztxt" in texts:
        info.add_text("Comment", texts["ztxt"], zip=True)
    if "itxt" in texts:
        info.add_itxt("Description", texts["itxt"], lang="en", tkey="Beschreibung", zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("chunk", ["ztxt", "itxt"])
def test_a_key_in_a_compressed_png_text_chunk_is_found(chunk):
    data = _png(**{chunk: f"run config: WANDB_API_KEY={NEW_WANDB}"})
    assert NEW_WANDB.encode() not in data
    assert _where("media/images/val_0.png", data) == [("compressed text chunk 1", "a W&B API key (WANDB_API_KEY)")]
    assert _where("media/images/clean.png", _png(**{chunk: "lr 0.1, epochs 30"})) == []


def test_compressed_png_text_is_inflated_within_a_bound():
    bomb = _png(ztxt="\0" * 20_000_000)  # 20 MB of text in a chunk of about 20 KB
    assert len(bomb) < 200_000
    texts, cut = png_compressed_texts(bomb, limit=1000)
    assert cut and sum(map(len, texts)) <= 1000
    (where, kind), = _where("a.png", bomb)
    assert where == "its compressed text chunks" and "cannot be checked" in kind


def _wandb_log(records: list[bytes]) -> bytes:
    """A ``.wandb`` log as W&B writes one: the file header, then records in 32 KiB blocks, split across them."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for record in records:
        first = True
        while True:
            room = WANDB_BLOCK - len(out) % WANDB_BLOCK
            if room < 7:
                out += b"\0" * room
                continue
            piece, record = record[:room - 7], record[room - 7:]
            kind = (1 if not record else 2) if first else (4 if not record else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + piece), len(piece), kind) + piece
            first = False
            if not record:
                break
    return bytes(out)


@pytest.mark.parametrize("secret,kind", [
    (f'"project": "{LEGACY_WANDB}"', "a 40-hex value"), (f"token {KGAT}", "KGAT_"), (f"key {NEW_WANDB}", "wandb_v1_"),
], ids=["40-hex", "KGAT", "wandb_v1"])
def test_a_key_split_by_a_wandb_block_header_is_found(secret, kind):
    history = [b'\x1a_{"_step": %d, "loss": 0.5}' % step for step in range(100)]
    start = 7 + sum(len(record) + 7 for record in history) + 7  # where the last record's bytes begin
    prefix = b"\x2a" + b"x" * (WANDB_BLOCK - 10 - start - 4) + b"\x0a\x1b{"  # the key starts 10 bytes before a block
    log = _wandb_log(history + [prefix + secret.encode() + b"}"])
    assert secret.encode() not in log  # a block header lies inside the key
    records, rest = wandb_records(log)
    assert len(records) == 101 and rest == b"" and secret.encode() in records[-1]
    assert [(where, found) for where, found in _where("run-abc123.wandb", log) if kind in found] == \
        [("record 101", next(k for _, k in _where("x.txt", secret.encode())))]


def test_a_wandb_log_cut_short_is_still_read_to_its_end():
    log = _wandb_log([b"config", KGAT.encode() + b" " + b"y" * 50])
    assert _where("run-x.wandb", log[:-10]) == [("line 1 of its damaged end", "a Kaggle API token (KGAT_)")]


def test_the_scan_is_linear_in_adjacent_quote_pairs():
    """A 421 KB notebook of ``str(['']*100000)`` took 223 s: each joined literal re-summed what came before."""
    stream = nbformat.v4.new_output("stream", name="stdout", text=str([""] * 100000) + "\n")
    data = _notebook(("print(str(['']*100000))", [stream]), (f"x = {['']*5000}\ny = ''", []))
    assert len(data) > 400_000

    def too_slow(*_):
        raise TimeoutError("the key scan took over 30 s on a 421 KB notebook")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)  # a bound, not a speed target: about 0.3 s here, 223 s when quadratic
    try:
        assert scan_file("nb.ipynb", data) == []
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("term", ["f25", "f26"])
def test_bundle_refuses_a_printed_key_and_a_key_in_the_notebooks_name(trained_run, tmp_path, capsys, term):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    printed = nbformat.v4.new_output("stream", name="stdout", text=f"{LEGACY_WANDB}\n")
    args = _bundle(run, tmp_path, _notebook(("print(os.environ['WANDB_API_KEY'])", [printed])))
    code, _, err = call_cli(capsys, *args[:2], term, *args[3:])
    assert code == 1 and "cell 2, output holds a W&B API key" in err and "Traceback" not in err
    assert not (tmp_path / "hand.zip").exists() and LEGACY_WANDB not in err
    named = tmp_path / f"HW2P2_{KGAT}.ipynb"
    named.write_bytes(_notebook(("x = 1", [])))
    args[args.index("--notebook") + 1] = named
    code, _, err = call_cli(capsys, *args[:2], term, *args[3:])
    assert code == 1 and "HW2P2_[key].ipynb: its name holds a Kaggle API token" in err
    assert not (tmp_path / "hand.zip").exists() and KGAT[5:] not in err


@pytest.mark.parametrize("leak", ["png", "file name", "wandb block"])
def test_fall_2025_bundle_refuses_a_key_hidden_in_the_offline_run_folder(trained_run, tmp_path, capsys, leak):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    offline = run / "wandb" / "offline-run-20261129_120000-abc123"
    (offline / "files" / "media" / "images").mkdir(parents=True)
    if leak == "png":
        (offline / "files" / "media" / "images" / "val_0.png").write_bytes(_png(ztxt=f"key: {KGAT}"))
    elif leak == "file name":
        (offline / "files" / f"{KGAT}.txt").write_text("notes\n")
    else:
        filler = b"x" * (WANDB_BLOCK - 7 - 7 - 10)  # the token starts 10 bytes before the first block ends
        (offline / "run-abc123.wandb").write_bytes(_wandb_log([filler + KGAT.encode()]))
    code, _, err = call_cli(capsys, *_bundle(run, tmp_path, _notebook(("x = 1", []))))
    assert code == 1 and "Kaggle API token (KGAT_)" in err and "Traceback" not in err
    assert not (tmp_path / "hand.zip").exists() and KGAT[5:] not in err
    assert {name for name, data in folder_texts(run) if scan_file(name, data)} == \
        {str(path) for path in offline.rglob("*") if path.is_file()}
