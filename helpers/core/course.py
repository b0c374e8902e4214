"""The assignment's fixed numbers, written once."""

COURSE_CLASSES = 8631  # identities in the course's classification data: the margin head's classes
PARAMETER_BUDGET = 30_000_000  # the most parameters a model may have, heads included
COURSE_TRAIN_IMAGES = 431_550  # images in the course's training split
# What one evaluation of a course run embeds: the dev split (about 43,000 images, for top-1) and the val pairs'
# images (at most 2 per pair, about 1,000 pairs).
COURSE_EVAL_IMAGES = 43_000 + 2_000
