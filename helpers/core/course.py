"""The assignment's fixed numbers, written once."""

COURSE_CLASSES = 8631  # identities in the course's classification data: the margin head's classes
PARAMETER_BUDGET = 30_000_000  # the most parameters a model may have, heads included
