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
             ("a) 56x56x128", "b) 28x28x128", "c) 27x27x128", "d) 28x28x64"), "b",
             "out = floor((56 + 2*1 - 3) / 2) + 1 = 28 spatially; the number of filters sets the channels: 128."),
    Question("residual connections",
             "Why does a ResNet block add its input to the output of its convolutions?",
             ("a) to double the number of channels", "b) so the block only has to learn a correction to the identity, "
              "which keeps gradients flowing through deep stacks", "c) to replace batch normalisation",
              "d) to make the network invariant to translation"), "b",
             "The skip gives the gradient a direct path, and a block that should do nothing only needs weights near zero."),
    Question("margin losses",
             "In ArcFace, where is the margin m added?",
             ("a) to every class logit", "b) to the angle between the embedding and its own class centre, "
              "giving cos(θ + m) for the target class", "c) to the embedding norm", "d) to the learning rate"), "b",
             "Only the target class gets the angular penalty, so the model must pull each face m radians closer to "
             "its own centre than the softmax decision boundary requires."),
    Question("EER",
             "The equal error rate of a verification system is",
             ("a) the accuracy at a threshold of 0.5", "b) the error where the false accept rate equals the false "
              "reject rate", "c) the area under the ROC curve", "d) the fraction of pairs with equal scores"), "b",
             "Sweep the threshold: false accepts fall as false rejects rise; the EER is where they cross. Lower is better."),
    Question("augmentation",
             "Which augmentation is usually safe for face verification and commonly reported to help?",
             ("a) vertical flips", "b) horizontal flips", "c) rotating by 90 degrees", "d) label smoothing with ArcFace"),
             "b",
             "Faces are roughly left-right symmetric, so a mirrored face is still the same person; upside-down faces "
             "never occur in the data, and label smoothing fights the margin."),
)


def grade(answers: dict[int, str]) -> tuple[int, list[str]]:
    """The number of right answers and one line of feedback per question (answers by question number, from 1)."""
    score, lines = 0, []
    for number, question in enumerate(QUESTIONS, 1):
        given = str(answers.get(number, "")).strip().lower()[:1]
        right = given == question.answer
        score += right
        verdict = "right" if right else (f"wrong (you said {given})" if given else "not answered")
        lines.append(f"{number}. {question.topic}: {verdict}; answer {question.answer}: {question.why}")
    return score, lines


def show() -> str:
    """The questions as text, for the notebook."""
    blocks = []
    for number, question in enumerate(QUESTIONS, 1):
        blocks.append(f"{number}. [{question.topic}] {question.text}\n" + "\n".join(f"   {c}" for c in question.choices))
    return "\n\n".join(blocks)
