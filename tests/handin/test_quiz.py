"""The checkpoint quiz cannot be passed without knowing the answers."""

from __future__ import annotations

import pytest

from helpers.handin import quiz

LETTERS = "abcd"


def _by_length(pick) -> dict[int, str]:
    """The answers of a student who picks an option by its length (``max`` or ``min``; the first on ties)."""
    answers = {}
    for number, question in enumerate(quiz.QUESTIONS, 1):
        lengths = [len(choice[3:]) for choice in question.choices]
        answers[number] = LETTERS[lengths.index(pick(lengths))]
    return answers


def test_choices_are_lettered_in_order_and_the_answer_is_one_of_them():
    for question in quiz.QUESTIONS:
        assert [choice[:3] for choice in question.choices] == [f"{letter}) " for letter in LETTERS]
        assert question.answer in LETTERS


def test_right_answers_are_spread_over_the_letters():
    assert {question.answer for question in quiz.QUESTIONS} == set(LETTERS)


@pytest.mark.parametrize("letter", LETTERS)
def test_one_letter_everywhere_does_not_pass(letter):
    score, _ = quiz.grade({number: letter for number in range(1, len(quiz.QUESTIONS) + 1)})
    assert not quiz.passed(score)


@pytest.mark.parametrize("pick", [max, min], ids=["longest", "shortest"])
def test_option_length_gives_nothing_away(pick):
    assert not quiz.passed(quiz.grade(_by_length(pick))[0])


def test_knowing_the_answers_passes():
    score, lines = quiz.grade({number: q.answer.upper() for number, q in enumerate(quiz.QUESTIONS, 1)})
    assert score == len(quiz.QUESTIONS) and quiz.passed(score)
    assert all("right" in line for line in lines)
    # papermill -y "quiz_answers: {1: c, ...}" hands the notebook string keys
    assert quiz.grade({str(number): q.answer for number, q in enumerate(quiz.QUESTIONS, 1)})[0] == len(quiz.QUESTIONS)
