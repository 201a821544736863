"""A user's items: the items CSV of ``build-data --from``, named input problems, leak-free splits.

The CSV has one row per item and a header; column names are case-insensitive:

``id``        required, unique
``audio``     a recording, any format librosa reads (WAV, FLAC, MP3, OGG, ...)
``score``     a score image (PNG, JPEG) or a symbolic score music21 parses (MusicXML ``.musicxml``
              ``.xml`` ``.mxl``, MIDI ``.mid`` ``.midi``, ABC ``.abc``, kern ``.krn``)
``caption``   the text itself, or the path of a ``.txt`` file holding it
``group``     items that must land in one split (default: the item alone)
``split``     ``train``, ``val`` or ``test`` (default: assigned by group, see :func:`assign_splits`)

Paths are relative to the CSV's folder and must stay inside it (symbolic links are followed
before the check). An empty cell means the item lacks that modality; a row needs at least one.

A column mmkit does not read is never dropped silently. One that looks like a known column
(a misspelling by :func:`difflib.get_close_matches`, or a usual synonym such as ``text`` for
``caption``) is an error with a "did you mean" hint, unless that known column is present too:
then, as for any other unknown column (``composer``, ``notes``, ...), it is ignored with a
:class:`ColumnWarning` and listed in the dataset card.

Every problem with a row is a :class:`Problem` naming the file, the line (the header is line 1),
the id and the reason; :class:`InputError` carries all of them.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from mmkit.vocab import SPLITS

__all__ = ["ITEM_COLUMNS", "IMAGE_SUFFIXES", "SYMBOLIC_SUFFIXES", "PROBLEM_KINDS", "Problem", "InputError", "ItemRow",
           "ColumnWarning", "read_items", "header_columns", "check_path", "column_hint", "assign_splits", "sort_problems"]

ITEM_COLUMNS = ("id", "audio", "score", "caption", "group", "split")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SYMBOLIC_SUFFIXES = (".musicxml", ".xml", ".mxl", ".mid", ".midi", ".abc", ".krn")
#: usual other names of the known columns (a misspelling is found by difflib)
_SYNONYMS = {"text": "caption", "description": "caption", "image": "score", "sheet": "score", "recording": "audio",
             "sound": "audio", "item": "id", "name": "id", "partition": "split", "fold": "split"}

#: every kind of bad input, with what it means
PROBLEM_KINDS = {
    "missing-file": "a path names no file",
    "unreadable-file": "the file exists but cannot be read or decoded",
    "escaping-path": "a path leaves the folder of the CSV (absolute, '..', or a link pointing outside)",
    "unsupported-format": "a score file that is neither an image nor a symbolic format",
    "silent-audio": "the recording (or the score rendered to audio) is silent",
    "unparseable-score": "music21 cannot parse the score, or it has no notes, or verovio cannot engrave it",
    "blank-image": "the score image has (almost) no ink",
    "empty-caption": "a caption (or its .txt file) holds no words",
    "duplicate-id": "an id used by an earlier row",
    "empty-id": "a row without id",
    "no-modality": "a row with neither audio, score nor caption",
    "bad-split": "a split other than train, val or test",
    "split-conflict": "items of one group given different splits",
    "nan-vector": "an embedding with NaN or infinite values",
    "dimension-mismatch": "an embedding whose size differs from the others",
    "unknown-id": "an id of the items CSV that the embeddings do not have",
    "unknown-column": "a header column that looks like a known one, which is absent (a misspelling?)",
    "vanished-modality": "a modality column (audio, score, caption) that no item of the bundle keeps",
}


@dataclass(frozen=True)
class Problem:
    """One bad input row: ``source`` file, ``where`` in it ("line 7", "row 12"), the item id, the kind
    (a key of :data:`PROBLEM_KINDS`) and the reason."""

    source: str
    where: str
    item: str | None
    kind: str
    reason: str

    def __str__(self) -> str:
        ident = f" (id {self.item!r})" if self.item else ""
        return f"{self.source} {self.where}{ident}: {self.kind}: {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)


def _order(p: Problem) -> tuple:
    number = p.where.rsplit(" ", 1)[-1]
    return (p.source, int(number) if number.isdigit() else -1, p.where)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """Problems in file and line (row) order."""
    return sorted(problems, key=_order)


class InputError(ValueError):
    """Bad input rows; ``problems`` lists every one (the message shows the first 20)."""

    def __init__(self, problems: list[Problem], hint: bool = True):
        self.problems = sort_problems(problems)
        shown = [str(p) for p in self.problems[:20]]
        more = len(self.problems) - len(shown)
        text = shown[0] if len(shown) == 1 else f"{len(self.problems)} bad input rows:\n  " + "\n  ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        if hint:
            text += "\n(--skip-bad, or skip_bad=True, builds without them and lists them in the dataset card)"
        super().__init__(text)


class ColumnWarning(UserWarning):
    """A column of the items CSV that mmkit ignores (``build-data --from`` prints it as a warning)."""


def column_hint(column: str) -> str | None:
    """The known column that ``column`` (lower case) most likely means: a synonym or the closest
    spelling (:func:`difflib.get_close_matches`, ratio >= 0.6); None when nothing is close."""
    if column in _SYNONYMS:
        return _SYNONYMS[column]
    close = difflib.get_close_matches(column, ITEM_COLUMNS, n=1, cutoff=0.6)
    return close[0] if close else None


def header_columns(csv_path: str | os.PathLike) -> list[str]:
    """The known columns of the items CSV's header (lower case, in order); [] for an empty file."""
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    return [c for c in (h.strip().lower() for h in header) if c in ITEM_COLUMNS]


def _check_columns(name: str, header: list[str], columns: list[str]) -> list[str]:
    """Raise ``InputError`` for unknown columns that look like an absent known one; warn about the
    other unknown columns (:class:`ColumnWarning`) and return them, as written in the header."""
    present = set(columns) & set(ITEM_COLUMNS)
    known = ", ".join(ITEM_COLUMNS)
    errors, ignored = [], []
    for written, column in zip(header, columns):
        if column in ITEM_COLUMNS:
            continue
        hint = column_hint(column)
        if hint is not None and hint not in present:
            errors.append(Problem(name, "line 1", None, "unknown-column",
                                  f"column {written!r} is not one mmkit reads; did you mean {hint!r}? "
                                  f"(the columns are {known})"))
            continue
        ignored.append(written)
        why = (f"it looks like {hint!r}, which is also present" if hint is not None
               else f"mmkit reads only {known}")
        warnings.warn(f"{name}: column {written!r} is ignored ({why}); rename or remove it if it holds item data",
                      ColumnWarning, stacklevel=3)
    if errors:
        raise InputError(errors, hint=False)
    return ignored


@dataclass(frozen=True)
class ItemRow:
    """One valid row of the items CSV (paths absolute, caption text read from its file)."""

    line: int
    id: str
    audio: Path | None
    score: Path | None
    caption: str | None
    group: str
    split: str | None
    audio_source: str = ""   # the cell as written (relative to the CSV)
    score_source: str = ""

    @property
    def score_kind(self) -> str | None:
        """``"image"`` or ``"symbolic"`` (None without a score)."""
        if self.score is None:
            return None
        return "image" if self.score.suffix.lower() in IMAGE_SUFFIXES else "symbolic"


def check_path(root: Path, cell: str) -> tuple[Path | None, str | None, str | None]:
    """``(absolute path, problem kind, reason)`` of a cell naming a file relative to ``root``."""
    if "\0" in cell:
        return None, "escaping-path", f"path {cell!r} contains a NUL byte"
    if os.path.isabs(cell) or cell.startswith("~"):
        return None, "escaping-path", f"path {cell!r} is absolute; paths are relative to the CSV's folder"
    root = root.resolve()
    path = (root / cell).resolve()  # follows links: one pointing outside escapes too
    if root not in path.parents:
        return None, "escaping-path", f"path {cell!r} leaves the CSV's folder"
    if not path.exists():
        return None, "missing-file", f"file {cell!r} not found"
    if not path.is_file():
        return None, "missing-file", f"{cell!r} is not a file"
    if not os.access(path, os.R_OK):
        return None, "unreadable-file", f"file {cell!r} is not readable (permissions)"
    return path, None, None


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def read_items(csv_path: str | os.PathLike) -> tuple[list[ItemRow], list[Problem], list[str]]:
    """Parse and check the items CSV: ``(valid rows, problems, ignored column names)``.

    Rows with a problem are left out of the valid rows (a duplicate id: the later row). Checks here
    need no decoding (files exist, are readable and inside the folder; ids, splits, captions);
    decoding problems (silent audio, unparseable score, ...) are found when the media are built.
    Raises ``InputError`` for a file that is not a usable CSV at all.
    """
    csv_path = Path(csv_path)
    name = csv_path.name
    if not csv_path.is_file():
        raise InputError([Problem(name, "file", None, "missing-file", f"{csv_path} not found")], hint=False)
    root = csv_path.resolve().parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(name, "file", None, "unreadable-file", f"not UTF-8 text ({exc})")], hint=False) from None
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError([Problem(name, "line 1", None, "unreadable-file", "the CSV is empty")], hint=False) from None
    except csv.Error as exc:
        raise InputError([Problem(name, "line 1", None, "unreadable-file", f"not a CSV ({exc})")], hint=False) from None
    columns = [h.strip().lower() for h in header]
    dup_cols = sorted({c for c in columns if c in ITEM_COLUMNS and columns.count(c) > 1})
    if dup_cols:
        raise InputError([Problem(name, "line 1", None, "unreadable-file", f"column(s) {dup_cols} appear twice")],
                         hint=False)
    ignored = _check_columns(name, header, columns)
    if "id" not in columns or not {"audio", "score", "caption"} & set(columns):
        raise InputError([Problem(name, "line 1", None, "unreadable-file",
                                  f"the header needs 'id' and at least one of 'audio', 'score', 'caption'; got {header}")],
                         hint=False)
    rows, problems, seen = [], [], {}
    line = 1
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(name, f"line {start}", None, "unreadable-file", f"not valid CSV ({exc})"))
            continue
        line = start
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            problems.append(Problem(name, f"line {line}", None, "unreadable-file",
                                    f"{len(cells)} cells for {len(columns)} columns (an unquoted comma?)"))
            continue
        cell = {c: (cells[i].strip() if i < len(cells) else "") for i, c in enumerate(columns) if c in ITEM_COLUMNS}
        item = cell.get("id", "")
        where = f"line {line}"

        def bad(kind: str, reason: str) -> None:
            problems.append(Problem(name, where, item or None, kind, reason))

        if not item:
            bad("empty-id", "the id cell is empty")
            continue
        if item in seen:
            bad("duplicate-id", f"id {item!r} is already used on line {seen[item]}")
            continue
        seen[item] = line
        paths, ok = {}, True
        for col in ("audio", "score"):
            value = cell.get(col, "")
            if not value:
                paths[col] = None
                continue
            path, kind, reason = check_path(root, value)
            if kind:
                bad(kind, f"{col}: {reason}")
                ok = False
                continue
            if col == "score" and path.suffix.lower() not in IMAGE_SUFFIXES + SYMBOLIC_SUFFIXES:
                bad("unsupported-format", f"score {value!r}: suffix {path.suffix!r} is neither an image "
                                          f"{IMAGE_SUFFIXES} nor a symbolic score {SYMBOLIC_SUFFIXES}")
                ok = False
                continue
            paths[col] = path
        caption = cell.get("caption", "") or None
        if caption is not None and caption.lower().endswith(".txt") and "\n" not in caption:
            path, kind, reason = check_path(root, caption)
            if kind:
                bad(kind, f"caption: {reason}")
                ok = False
            else:
                try:
                    text_value = path.read_text(encoding="utf-8-sig").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    bad("unreadable-file", f"caption file {caption!r} is not UTF-8 text ({type(exc).__name__})")
                    ok = False
                else:
                    if not _has_words(text_value):
                        bad("empty-caption", f"caption file {caption!r} holds no words")
                        ok = False
                    caption = text_value
        elif caption is not None and not _has_words(caption):
            bad("empty-caption", f"caption {caption!r} holds no words")
            ok = False
        split = cell.get("split", "").lower() or None
        if split is not None and split not in SPLITS:
            bad("bad-split", f"split {cell['split']!r} is not one of {SPLITS}")
            ok = False
        if ok and paths.get("audio") is None and paths.get("score") is None and caption is None:
            bad("no-modality", "no audio, score or caption")
            ok = False
        if ok:
            rows.append(ItemRow(line=line, id=item, audio=paths.get("audio"), score=paths.get("score"), caption=caption,
                                group=cell.get("group", "") or item, split=split,
                                audio_source=cell.get("audio", ""), score_source=cell.get("score", "")))
    return rows, problems, ignored


def _rank(seed: int, group: str) -> str:
    return hashlib.sha1(f"split{seed}:{group}".encode()).hexdigest()


def assign_splits(groups: list[str], given: list[str | None], seed: int = 0,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[list[str | None], list[int]]:
    """Leak-free, deterministic splits: every group goes to one split.

    A group with a ``given`` split keeps it (rows of one group given different splits are
    conflicts: their indices are returned, their split is None). The other groups, in the order of
    a hash of ``seed`` and the group name, each go to the split furthest below its share of the
    items (``fractions``); a split left empty then takes the last group of the split with most
    groups. Returns ``(split per row, indices of conflicting rows)``. The result depends only on
    the groups, their sizes and the given splits: editing a row's media or caption never moves it.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), got {fractions}")
    total = float(sum(fractions))
    fixed: dict[str, str] = {}
    conflicts = []
    for i, (g, s) in enumerate(zip(groups, given)):
        if s is None:
            continue
        if fixed.setdefault(g, s) != s:
            conflicts.append(i)
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    count = {s: 0 for s in SPLITS}
    for g, s in fixed.items():
        count[s] += sizes[g]
    n = len(groups)
    target = {s: n * f / total for s, f in zip(SPLITS, fractions)}
    order = sorted((g for g in sizes if g not in fixed), key=lambda g: _rank(seed, g))
    placed: dict[str, str] = {}
    members: dict[str, list[str]] = {s: [] for s in SPLITS}
    for g in order:
        s = max(SPLITS, key=lambda s: (target[s] - count[s], -SPLITS.index(s)))
        placed[g] = s
        members[s].append(g)
        count[s] += sizes[g]
    for s in SPLITS:
        if count[s] == 0 and fractions[SPLITS.index(s)] > 0:
            donors = [d for d in SPLITS if len(members[d]) > 1 or (members[d] and count[d] > sizes[members[d][-1]])]
            if not donors:
                continue
            d = max(donors, key=lambda d: (len(members[d]), count[d]))
            g = members[d].pop()
            members[s].append(g)
            placed[g] = s
            count[d] -= sizes[g]
            count[s] += sizes[g]
    out = [fixed.get(g, placed.get(g)) for g in groups]
    for i in conflicts:
        out[i] = None
    return out, conflicts
