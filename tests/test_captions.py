"""Captions name the key and the notes as the score spells them (issue 25, item 8: a caption read
"set in C# major. It begins on Ab" for a piece written in D flat major)."""
import pytest

from mmkit.data.embedded.captions import describe, spelled_key


def _melody(names: list[str], sharps: int | None):
    """One part, one bar of eighth notes ``names`` (music21 spelling), with a key signature of
    ``sharps`` (negative: flats) unless None."""
    from music21 import key, meter, note, stream

    bar = stream.Measure()
    if sharps is not None:
        bar.append(key.KeySignature(sharps))
    bar.append(meter.TimeSignature(f"{len(names)}/8"))
    for name in names:
        bar.append(note.Note(name, quarterLength=0.5))
    part = stream.Part()
    part.append(bar)
    score = stream.Score()
    score.append(part)
    return score


# a D flat major scale walked down from its dominant and a C sharp major one: the same pitch classes
D_FLAT = ["A-4", "F4", "D-4", "D-5", "C5", "B-4", "A-4", "G-4", "F4", "E-4", "D-4"]
C_SHARP = ["G#4", "E#4", "C#4", "C#5", "B#4", "A#4", "G#4", "F#4", "E#4", "D#4", "C#4"]


@pytest.mark.parametrize("names, sharps, key_name, first", [
    (D_FLAT, -5, "D flat major", "Ab"),     # the signature says D flat
    (D_FLAT, None, "D flat major", "Ab"),   # no signature: the notes say D flat
    (C_SHARP, 7, "C# major", "G#"),
    (C_SHARP, None, "C# major", "G#"),
])
def test_key_and_first_note_are_spelled_from_the_score(names, sharps, key_name, first):
    d = describe(_melody(names, sharps))
    assert d["key"] == key_name and d["first_note"] == first
    assert d["ends_on_tonic"] is True  # both end on their tonic (compared by pitch class, whatever the spelling)


def test_the_analysis_alone_spells_d_flat_as_c_sharp():
    """The oracle for the fix: music21's key finder, given a D flat major piece, answers C#."""
    score = _melody(D_FLAT, -5)
    analysed = score.analyze("key")
    assert (analysed.tonic.name, analysed.mode) == ("C#", "major")
    respelled = spelled_key(score, analysed)
    assert (respelled.tonic.name, respelled.mode, respelled.sharps) == ("D-", "major", -5)
    assert respelled.tonic.pitchClass == analysed.tonic.pitchClass


def test_a_minor_key_follows_its_signature():
    """Six flats in a minor piece: E flat minor (the signature's minor key, not its major, G flat)."""
    names = ["B-4", "G-4", "E-4", "E-5", "D-5", "C-5", "B-4", "A-4", "G-4", "F4", "E-4"]
    score = _melody(names, -6)
    respelled = spelled_key(score, score.analyze("key"))
    assert (respelled.tonic.name, respelled.mode) == ("E-", "minor")
    assert describe(score)["key"] == "E flat minor"
