"""Which face of an enrolment photo is the person's: --pick central|largest|ask, and matching the person's other photos."""

from __future__ import annotations

import numpy as np
import pytest

from facetorch.recognition.subjects import choose_faces, pick_face, subject_face

# A portrait of 200 x 300 (height x width): the subject in the middle, a slightly larger face at the edge.
PORTRAIT = (200, 300)
MIDDLE, EDGE = [120, 60, 180, 130], [0, 0, 75, 80]


def test_central_takes_the_large_face_near_the_middle_and_largest_the_largest() -> None:
    boxes = np.array([EDGE, MIDDLE], float)
    assert subject_face(boxes)[0] is None  # neither is twice the other: 0.1 refused the photo
    assert pick_face(boxes, PORTRAIT, "central") == 1
    assert pick_face(boxes, PORTRAIT, "largest") == 0
    assert pick_face(boxes, PORTRAIT, "ask") is None
    with pytest.raises(ValueError, match="--pick must be one of central, largest, ask"):
        pick_face(boxes, PORTRAIT, "middle")


def test_the_face_that_matches_the_other_photos_wins_and_the_notes_say_which() -> None:
    me, other = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    found = [np.array([MIDDLE], float), np.array([MIDDLE, EDGE], float), np.array([EDGE, MIDDLE], float)]

    def embed(photo: int, boxes: np.ndarray) -> np.ndarray:
        # photo 1: the person is the EDGE face (a friend in the middle); photo 2: nobody matches
        faces = {0: [me], 1: [other, me], 2: [other, -me]}[photo]
        return np.array(faces[: len(boxes)] if len(boxes) > 1 else [faces[0]])

    chosen, notes = choose_faces(found, [PORTRAIT] * 3, embed, "central", match_threshold=0.5)
    assert chosen == [0, 1, None]  # photo 2: the person's photos are known and neither face is theirs: skipped
    assert notes[0] == "" and "face 2 of 2 at (0, 0, 75, 80): it matches the person's other photos (1.000)" == notes[1]
    assert notes[2] == "2 faces and none matches the person's other photos (best 0.000, below 0.500)"
    chosen, notes = choose_faces(found, [PORTRAIT] * 3, embed, "ask", match_threshold=0.5)
    assert chosen == [0, None, None] and "none clearly the largest" in notes[1]
    # No clear photo of the person: --pick alone decides.
    chosen, _ = choose_faces(found[1:], [PORTRAIT] * 2, lambda k, b: embed(k + 1, b), "largest", match_threshold=0.5)
    assert chosen == [1, 0]
