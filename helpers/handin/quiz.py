"""The checkpoint quiz: multiple-choice questions on what the assignment teaches, graded with explanations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    topic: str
    text: str
    choices: tuple[str, ...]
    answer: str  # the letter of the right choice
    why: str


QUESTIONS = (
    Question("convolutions",
             "A 3x3 convolution with stride 2 and padding 1 takes a 56x56x64 feature map to 128 channels. "
             "What is the output size?",
             ("a) 56x56x128", "b) 27x27x128", "c) 28x28x128", "d) 28x28x64"), "c",
             "out = floor((56 + 2*1 - 3) / 2) + 1 = 28 spatially; the number of filters sets the channels: 128."),
    Question("residual connections",
             "Why does a ResNet block add its input to the output of its convolutions?",
             ("a) the block learns only a correction; gradients reach the early layers",
              "b) the sum doubles the number of channels without adding any new weights",
              "c) with the skip in place, batch normalisation is no longer needed at all",
              "d) adding the input makes the features invariant to translations of faces"), "a",
             "The skip gives the gradient a direct path, and a block that should do nothing only needs weights near zero."),
    Question("margin losses",
             "In ArcFace, where is the margin m added?",
             ("a) to every class logit, before the softmax is taken",
              "b) to the norm of the embedding, before normalising it",
              "c) to the learning rate of the margin head's weights",
              "d) to the angle between each face and its class centre"), "d",
             "Only the target class gets the angular penalty, cos(theta + m), so the model must pull each face m "
             "radians closer to its own centre than the softmax decision boundary requires."),
    Question("EER",
             "The equal error rate of a verification system is",
             ("a) the error rate at a fixed similarity threshold of 0.5",
              "b) the error at which false accepts equal false rejects",
              "c) one minus the area under the ROC curve of the pairs",
              "d) the share of pairs whose two scores come out equal"), "b",
             "Sweep the threshold: false accepts fall as false rejects rise; the EER is where they cross. Lower is better."),
    Question("augmentation",
             "Which augmentation is usually safe for face verification and commonly reported to help?",
             ("a) horizontal flips", "b) vertical flips", "c) rotations by 90 degrees",
              "d) label smoothing with ArcFace"), "a",
             "Faces are roughly left-right symmetric, so a mirrored face is still the same person; upside-down faces "
             "never occur in the data, and label smoothing fights the margin."),
)
PASS_MARK = 4  # of 5: one slip is allowed, a fixed letter or the longest option never passes


def grade(answers: dict[int | str, str]) -> tuple[int, list[str]]:
    """The number of right answers and one line of feedback per question (answers by question number, from 1;
    papermill passes the numbers as strings)."""
    score, lines = 0, []
    for number, question in enumerate(QUESTIONS, 1):
        given = str(answers.get(number, answers.get(str(number), ""))).strip().lower()[:1]
        right = given == question.answer
        score += right
        verdict = "right" if right else (f"wrong (you said {given})" if given else "not answered")
        lines.append(f"{number}. {question.topic}: {verdict}; answer {question.answer}: {question.why}")
    return score, lines


def passed(score: int) -> bool:
    """Whether a quiz score reaches the pass mark."""
    return score >= PASS_MARK


def show() -> str:
    """The questions as text, for the notebook."""
    blocks = []
    for number, question in enumerate(QUESTIONS, 1):
        blocks.append(f"{number}. [{question.topic}] {question.text}\n" + "\n".join(f"   {c}" for c in question.choices))
    return "\n\n".join(blocks)
